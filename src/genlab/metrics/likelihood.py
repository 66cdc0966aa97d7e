"""Likelihood bookkeeping shared by the latent-variable and likelihood-based families."""

from __future__ import annotations

import math

import torch


def gaussian_kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, diag(exp(logvar))) || N(0, I) ) in nats, summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def log_mean_exp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """log(mean(exp(x))) along `dim`, without overflow for large |x|."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """A negative log-likelihood in nats per example, as bits per data dimension."""
    return nll_nats / (num_dims * math.log(2.0))
