"""Text-generation metrics: likelihood-based (perplexity, bits per character) and
sample-based diversity (distinct-n, self-BLEU)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from genlab.errors import GenlabError


def _finite(value: float | torch.Tensor, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise GenlabError(f"{name} is {value}", "the model produced NaN or Inf log-likelihoods; check training")
    return value


def perplexity(nll_nats_per_token: float | torch.Tensor) -> float:
    """Perplexity exp(mean NLL per token), from the mean negative log-likelihood in nats."""
    return math.exp(_finite(nll_nats_per_token, "nll_nats_per_token"))


def bits_per_char(nll_nats_total: float | torch.Tensor, num_chars: int) -> float:
    """Bits per character: total NLL in nats over a text, divided by num_chars * ln 2.

    Tokenizer-independent, so character, byte and BPE models compare on the same text.
    """
    if num_chars <= 0:
        raise GenlabError(f"num_chars must be positive, got {num_chars}", "pass the length of the evaluated text")
    return _finite(nll_nats_total, "nll_nats_total") / (num_chars * math.log(2.0))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """distinct-n (Li et al. 2016): unique n-grams / all n-grams over all texts, in [0, 1].

    Texts are split on whitespace; n-grams do not cross text boundaries.
    """
    if n < 1:
        raise GenlabError(f"n must be >= 1, got {n}")
    ngrams = [tuple(words[i : i + n]) for words in map(str.split, texts) for i in range(len(words) - n + 1)]
    if not ngrams:
        raise GenlabError(
            f"distinct-{n} is undefined: no text has {n} or more words",
            "generate longer samples or use a smaller n",
        )
    return len(set(ngrams)) / len(ngrams)


def self_bleu(texts: Sequence[str], max_order: int = 4, max_texts: int = 500, seed: int = 0) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen) on sacrebleu's 0-100 scale; higher = less diverse.

    The mean of sacrebleu's sentence BLEU (13a tokenizer, 'exp' smoothing, effective
    order) of each text against all the other texts as references. Identical texts score
    100. Sets larger than `max_texts` are subsampled with `seed` to bound the cost.

    The result equals calling sacrebleu's `BLEU.sentence_score(text, others)` per text,
    but each text's n-grams are counted once: the clipping count of an n-gram against
    "every text but i" is its highest count over all texts, or the second highest when
    text i holds the highest. That makes the cost linear instead of quadratic in texts.
    """
    if max_order < 1:
        raise GenlabError(f"max_order must be >= 1, got {max_order}")
    texts = list(texts)
    if len(texts) < 2:
        raise GenlabError(f"self-BLEU needs at least 2 texts, got {len(texts)}", "generate more samples")
    if len(texts) > max_texts:
        texts = random.Random(seed).sample(texts, max_texts)

    tokenize = Tokenizer13a()
    counted = [extract_all_word_ngrams(tokenize(text.rstrip()), 1, max_order) for text in texts]
    lengths = np.array([length for _, length in counted])

    best: dict[tuple[str, ...], tuple[int, int, int]] = {}  # n-gram -> (top count, its text, runner-up count)
    for i, (ngrams, _) in enumerate(counted):
        for ngram, count in ngrams.items():
            top, owner, runner_up = best.get(ngram, (0, -1, 0))
            if count > top:
                best[ngram] = (count, i, top)
            elif count > runner_up:
                best[ngram] = (top, owner, count)

    scores = []
    for i, (ngrams, length) in enumerate(counted):
        correct, total = [0] * max_order, [0] * max_order
        for ngram, count in ngrams.items():
            top, owner, runner_up = best[ngram]
            correct[len(ngram) - 1] += min(count, runner_up if owner == i else top)
            total[len(ngram) - 1] += count
        # Closest reference length, ties to the shorter one (as sacrebleu does).
        others = np.delete(lengths, i)
        gaps = np.abs(others - length)
        ref_length = int(others[gaps == gaps.min()].min())
        score = BLEU.compute_bleu(
            correct, total, length, ref_length, smooth_method="exp", effective_order=True, max_ngram_order=max_order
        )
        scores.append(score.score)
    return float(np.mean(scores))
