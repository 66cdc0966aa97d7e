"""Anomaly detection: score images by how badly a model trained on normal data explains them.

Scores (higher = more anomalous):

  elbo   the negative ELBO, -E_q[log p(x | z)] + KL(q(z | x) || p(z)), averaged over
         `samples` draws of z: a bound on -log p(x) in nats
  iwae   the negative IWAE bound with `samples` importance samples: tighter, slower
  recon  the squared error of the VAE's reconstruction (decoder mean of the posterior mean)

The standard one-class protocol on MNIST (as in Ruff et al. 2018, Deep SVDD): train on
the training images of one digit only (`data.only_classes=[d]`), score the whole test set,
and report the area under the ROC curve for telling the other nine digits (anomalies) from
digit d (normal). AUROC needs no threshold: it is the probability that a random anomaly
scores higher than a random normal image (0.5 = chance).
"""

from __future__ import annotations

import torch

from ..errors import GenlabError

METHODS = ("elbo", "iwae", "recon")
BATCH = 500


@torch.no_grad()
def anomaly_scores(model, images: torch.Tensor, *, method: str = "elbo", samples: int = 8, seed: int = 0,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """[N] scores of [N, C, H, W] images in the model's data range; deterministic in `seed`."""
    if method not in METHODS:
        raise GenlabError(f"unknown anomaly score {method!r}", f"use one of {', '.join(METHODS)}")
    if samples < 1:
        raise GenlabError(f"the number of samples must be at least 1, got {samples}")
    if method == "recon":
        model.require("encode", "reconstruction-error anomaly scores")
    else:
        model.require("log_likelihood", f"{method} anomaly scores")
    if "conditional" in model.capabilities and labels is None:
        raise GenlabError("a class-conditional model scores an image only together with its class",
                          "use an unconditional model (trained on the normal data only)")
    shape = tuple(model.config.input_shape)
    if images.dim() != 4 or tuple(images.shape[1:]) != shape:
        raise GenlabError(f"this model takes images of shape {shape}, got {tuple(images.shape[1:])}")
    generator = torch.Generator(model.device).manual_seed(seed)
    scores = []
    for start in range(0, len(images), BATCH):
        x = images[start : start + BATCH].to(model.device)
        y = None if labels is None else labels[start : start + BATCH].to(model.device)
        if method == "recon":
            scores.append((model.reconstruct(x, y) - x).pow(2).flatten(1).sum(1))
        elif method == "iwae":
            scores.append(-model.log_likelihood(x, y, k=samples, generator=generator))
        else:
            draws = torch.stack([model.elbo(x, y, generator=generator)["elbo"] for _ in range(samples)])
            scores.append(-draws.mean(0))
    return torch.cat(scores).float().cpu()


def auroc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """Area under the ROC curve of `scores` for telling anomalies (True) from normal images."""
    from sklearn.metrics import roc_auc_score

    is_anomaly = torch.as_tensor(is_anomaly).bool()
    if is_anomaly.all() or not is_anomaly.any():
        raise GenlabError("AUROC needs both normal images and anomalies among the scored images",
                          "score a split that holds the normal class and other classes")
    return float(roc_auc_score(is_anomaly.numpy(), torch.as_tensor(scores).double().numpy()))


def one_class_auroc(model, images: torch.Tensor, labels: torch.Tensor, normal_classes, *, method: str = "elbo",
                    samples: int = 8, seed: int = 0) -> dict:
    """The one-class protocol: images whose label is not in `normal_classes` are the anomalies."""
    normal = torch.isin(labels, torch.as_tensor(list(normal_classes)))
    scores = anomaly_scores(model, images, method=method, samples=samples, seed=seed)
    return {
        "auroc": auroc(scores, ~normal),
        "normal_classes": sorted(int(c) for c in normal_classes),
        "n_normal": int(normal.sum()),
        "n_anomalous": int((~normal).sum()),
        "method": method,
        "mean_score_normal": scores[normal].mean().item(),
        "mean_score_anomalous": scores[~normal].mean().item(),
        "scores": scores,
    }
