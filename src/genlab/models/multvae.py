"""Mult-VAE^PR and Mult-DAE (Liang, Krishnan, Hoffman & Jebara 2018, "Variational autoencoders for
collaborative filtering"; the reference code is dawenl/vae_cf).

A user is the bag of items they clicked, x in {0, 1}^I. The decoder maps a latent code z to
logits over all items, and the likelihood is multinomial: log p(x | z) = sum_i x_i log
softmax(f(z))_i. A multinomial spreads one unit of probability mass over the catalogue, so the
items compete for it, which is what a top-k ranking needs (the paper finds it beats Gaussian and
logistic likelihoods).

    Mult-VAE^PR:  x -> L2-normalise -> dropout(0.5) -> I-600-(mu, logvar of 200) with tanh
                  z = mu + sigma * eps (training) or mu (scoring) -> 200-600-I logits
                  loss = -log p(x | z) + beta * KL(q(z | x) || N(0, I)), beta annealed
                  linearly from 0 to beta_cap (0.2) over anneal_steps updates ("partial
                  regularisation": a full beta = 1 over-regularises these sparse inputs)
    Mult-DAE:     x -> L2-normalise -> dropout(0.5) -> I-200-I with tanh; loss = -log p(x | x~)
                  + l2 * sum of squared weights (no latent noise, no KL)

The paper's model selection, the epoch with the best validation NDCG@100, is the Trainer's
keep_best with train.monitor=val.ndcg@100 (validation_step reports NDCG@100, Recall@20/50).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError
from ..registry import register_family
from .base import Recommender


@dataclass
class MultVAEConfig:
    num_items: int = 0  # from the data
    item_ids: tuple[int, ...] = ()  # from the data: column -> the source's item id
    item_titles: tuple[str, ...] = ()  # from the data: column -> title ("" where the source has none)
    hidden: tuple[int, ...] = (600,)  # encoder I-600-200, decoder mirrored
    latent_dim: int = 200
    dropout: float = 0.5  # on the normalised input: the denoising that makes the model generalise
    beta_cap: float = 0.2  # the KL weight's ceiling (the paper's best on ML-20M)
    anneal_steps: int = 200_000  # beta = min(beta_cap, step / anneal_steps), as vae_cf's total_anneal_steps
    l2: float = 0.0  # weight on the sum of squared weight matrices (vae_cf: 0 for the VAE)

    def __post_init__(self):
        if self.num_items < 1 and self.item_ids:
            raise GenlabError("model.num_items must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise GenlabError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.latent_dim < 1 or any(h < 1 for h in self.hidden):
            raise GenlabError("model.latent_dim and model.hidden sizes must be at least 1")
        if self.beta_cap < 0 or self.anneal_steps < 1 or self.l2 < 0:
            raise GenlabError("model.beta_cap and model.l2 must be >= 0 and model.anneal_steps >= 1")


@dataclass
class MultDAEConfig:
    num_items: int = 0
    item_ids: tuple[int, ...] = ()
    item_titles: tuple[str, ...] = ()
    hidden: tuple[int, ...] = ()  # between input and code; the paper's Mult-DAE is I-200-I
    latent_dim: int = 200
    dropout: float = 0.5
    l2: float = 2e-5  # vae_cf: lam = 0.01 / batch_size (500)

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise GenlabError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.latent_dim < 1 or any(h < 1 for h in self.hidden) or self.l2 < 0:
            raise GenlabError("model.latent_dim and model.hidden sizes must be at least 1, model.l2 >= 0")


def tanh_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them (none after the last), initialised as vae_cf:
    Xavier-uniform weights, biases ~ N(0, 0.001^2)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.normal_(linear.bias, std=0.001)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def multinomial_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-sum_i x_i log softmax(logits)_i per user, averaged over the batch: [B, I] x [B, I] -> ()."""
    return -(F.log_softmax(logits, dim=1) * x).sum(1).mean()


class _AutoencoderRecommender(Recommender):
    """The shared input path: clicks -> unit L2 norm -> dropout (training only)."""

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:  # [B, I] -> [B, I]
        x = F.normalize(x, dim=1)  # a user's norm says how active they are, not what they like
        return F.dropout(x, p=self.config.dropout, training=self.training)

    def weight_penalty(self) -> torch.Tensor:
        return sum(m.weight.pow(2).sum() for m in self.modules() if isinstance(m, nn.Linear))


@register_family("multvae")
class MultVAE(_AutoencoderRecommender):
    config_class = MultVAEConfig

    def __init__(self, config: MultVAEConfig):
        super().__init__(config)
        sizes = [config.num_items, *config.hidden]
        self.encoder = tanh_mlp([*sizes, 2 * config.latent_dim])  # [B, I] -> [B, 2Z] (mu, logvar)
        self.decoder = tanh_mlp([config.latent_dim, *reversed(sizes)])  # [B, Z] -> [B, I] logits

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [B, I] -> [B, Z], [B, Z]
        mu, logvar = self.encoder(self.corrupt(x)).chunk(2, dim=1)
        return mu, logvar

    def beta(self, step: int) -> float:
        return min(self.config.beta_cap, step / self.config.anneal_steps)

    def loss(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # the Trainer seeds the global RNG per step
        nll = multinomial_nll(self.decoder(z), x)
        kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(1).mean()
        beta = self.beta(step)
        total = nll + beta * kl + (self.config.l2 * self.weight_penalty() if self.config.l2 else 0.0)
        return {"loss": total, "nll": nll, "kl": kl, "beta": torch.tensor(beta)}

    def training_step(self, batch, step, optimizers):
        out = self.loss(batch["x"], step)
        optimizers["main"].step(out["loss"])
        return {key: float(value.detach()) for key, value in out.items()}

    def scores(self, history: torch.Tensor) -> torch.Tensor:  # [B, I] -> [B, I] logits of the mean code
        self.check_history(history)
        mu, _ = self.encode(history.to(self.device, torch.float32))
        return self.decoder(mu)


@register_family("multdae")
class MultDAE(_AutoencoderRecommender):
    config_class = MultDAEConfig

    def __init__(self, config: MultDAEConfig):
        super().__init__(config)
        self.network = tanh_mlp([config.num_items, *config.hidden, config.latent_dim, *reversed(config.hidden),
                                 config.num_items])  # [B, I] -> [B, I] logits, tanh between layers

    def training_step(self, batch, step, optimizers):
        x = batch["x"]
        nll = multinomial_nll(self.network(self.corrupt(x)), x)
        loss = nll + self.config.l2 * self.weight_penalty()
        optimizers["main"].step(loss)
        return {"loss": float(loss.detach()), "nll": float(nll.detach())}

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        self.check_history(history)
        return self.network(self.corrupt(history.to(self.device, torch.float32)))
