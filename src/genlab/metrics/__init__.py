"""Metrics, each checked in tests against a closed form or an independent reference.

- likelihood.py: KL to N(0, I), log-mean-exp, bits per dimension (ELBO/IWAE live with the families)
- features.py:   the feature networks genlab trains and ships (lenet-mnist, lenet-digits), Inception when installed
- image.py:      Fréchet and kernel distances, classifier score, precision/recall, density/coverage,
                 class histograms, PSNR, SSIM
- text.py:       perplexity, bits per character, distinct-n, self-BLEU
- ranking.py:    recall@k, NDCG@k
"""
