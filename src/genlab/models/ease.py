"""Two baselines every recommender comparison needs, as artifacts like any model:

EASE (Steck 2019, "Embarrassingly shallow autoencoders for sparse data"): an item-item weight
matrix B [I, I] with a zero diagonal, the ridge regression of every item's column on all the
other items' columns of the training clicks X [U, I]:

    minimise ||X - X B||^2 + l2 ||B||^2  subject to diag(B) = 0
    P = (X^T X + l2 I)^-1,   B = I - P diag(1 / diag(P))   (so B_ij = -P_ij / P_jj, B_jj = 0)

and a user's scores are x B. The closed form needs only the Gram matrix G = X^T X, which the
model takes from the whole training split once (`initialize_from_data`, called by the Trainer
at the start of a fit); each training step then solves for one l2 of `l2_grid` (step k uses the
k-th), the Trainer validates after every step (train.eval_every=1) and keep_best with
train.monitor=val.ndcg@100 exports the B of the l2 that ranks the validation users best.
So `genlab train ease-...` runs the same loop, checkpoints and metrics.json as any family,
and `l2` records the choice.

popularity: every user gets the items ranked by how many training users clicked them. It is
what a model must clearly beat before its personalisation means anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import GenlabError
from ..registry import register_family
from .base import Recommender

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class EASEConfig:
    num_items: int = 0  # from the data
    item_ids: tuple[int, ...] = ()
    item_titles: tuple[str, ...] = ()
    l2_grid: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)  # Steck's best on ML-20M: 500
    solve_dtype: str = "float64"  # the Gram and its inverse (B is stored in float32); float32 halves time and memory

    def __post_init__(self):
        if not self.l2_grid or any(not value > 0 for value in self.l2_grid):
            raise GenlabError(f"model.l2_grid must be one or more positive numbers, got {list(self.l2_grid)}")
        if self.solve_dtype not in DTYPES:
            raise GenlabError(f"unknown model.solve_dtype {self.solve_dtype!r}", f"use one of {', '.join(DTYPES)}")


def gram_matrix(clicks, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    """X^T X [I, I] of a scipy CSR click matrix [U, I]: a sparse product (cost: the sum over users of
    their clicks squared), never a dense [U, I] matrix."""
    clicks = clicks.astype(np.float32)  # counts stay exact in float32 below 2^24 users
    product = (clicks.T @ clicks).toarray()  # [I, I] float32
    return torch.from_numpy(product).to(device, dtype)


def ease_weights(gram: torch.Tensor, l2: float) -> torch.Tensor:
    """B [I, I] (float32, zero diagonal) from the Gram matrix, in the Gram's precision."""
    regularised = gram.clone()
    regularised.diagonal().add_(l2)
    # G + l2 I is symmetric positive definite: Cholesky is about twice as fast as a general inverse.
    precision = torch.cholesky_inverse(torch.linalg.cholesky(regularised))  # P [I, I]
    del regularised
    weights = precision / -precision.diagonal()  # column j divided by -P_jj
    weights.diagonal().zero_()
    return weights.float()


@register_family("ease")
class EASE(Recommender):
    config_class = EASEConfig

    def __init__(self, config: EASEConfig):
        super().__init__(config)
        self.register_buffer("weights", torch.zeros(config.num_items, config.num_items))  # B [I, I]
        self.register_buffer("l2", torch.zeros(()))  # the chosen l2 (0 until a step has solved)
        self.register_buffer("gram", torch.zeros(0), persistent=False)  # G [I, I], set by initialize_from_data

    def configure_optimizers(self, train):
        return {}  # nothing is learned by gradient

    def initialize_from_data(self, data, resumed):
        self.gram = gram_matrix(data.rows("train"), DTYPES[self.config.solve_dtype], self.weights.device)

    def training_step(self, batch, step, optimizers):
        if self.gram.numel() == 0:
            raise GenlabError("EASE has no Gram matrix: initialize_from_data was not called",
                              "train EASE with `genlab train` (or call model.initialize_from_data(data, False))")
        if step >= len(self.config.l2_grid):  # one step per L2 weight; more would silently repeat the grid
            raise GenlabError(f"EASE tries each of the {len(self.config.l2_grid)} weights of model.l2_grid once, "
                              f"so it trains {len(self.config.l2_grid)} steps, not {step + 1}+",
                              f"set train.steps={len(self.config.l2_grid)}")
        l2 = self.config.l2_grid[step]
        self.fit_l2(l2)
        return {"l2": l2}

    def fit_l2(self, l2: float) -> None:
        with torch.no_grad():
            self.weights.copy_(ease_weights(self.gram, l2))
            self.l2.fill_(l2)

    def scores(self, history):  # [B, I] -> [B, I]
        self.check_history(history)
        return history.to(self.device, torch.float32) @ self.weights


@dataclass
class PopularityConfig:
    num_items: int = 0
    item_ids: tuple[int, ...] = ()
    item_titles: tuple[str, ...] = ()


@register_family("popularity")
class Popularity(Recommender):
    config_class = PopularityConfig

    def __init__(self, config: PopularityConfig):
        super().__init__(config)
        self.register_buffer("counts", torch.zeros(config.num_items))  # training users per item [I]

    def configure_optimizers(self, train):
        return {}

    def initialize_from_data(self, data, resumed):
        if not resumed:
            counts = np.asarray(data.rows("train").sum(0), dtype=np.float32).ravel()
            self.counts.copy_(torch.from_numpy(counts))

    def training_step(self, batch, step, optimizers):
        return {"items_clicked": float((self.counts > 0).sum())}  # the counting happened in initialize_from_data

    def scores(self, history):  # [B, I] -> [B, I]: the same ranking for everyone
        self.check_history(history)
        return self.counts.expand(history.shape[0], -1).clone()
