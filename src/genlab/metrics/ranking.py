"""Top-k ranking metrics for recommenders, following Liang et al. 2018 (Mult-VAE)."""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import GenlabError

ArrayLike = torch.Tensor | np.ndarray


def _top_k_hits(
    scores: ArrayLike, relevant: ArrayLike, k: int, exclude: ArrayLike | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For users with at least one relevant item: [U', k] relevance of the top-k items, and #relevant.

    Excluded items (typically those seen in training) get score -inf so they are never
    recommended, and do not count as relevant, since no ranking could retrieve them.
    """
    scores_t = torch.as_tensor(scores).detach().to(torch.float64)
    relevant_t = torch.as_tensor(relevant).detach().to(scores_t.device) != 0
    if scores_t.ndim != 2 or relevant_t.shape != scores_t.shape:
        raise GenlabError(
            "scores and relevant must both be [num_users, num_items], "
            f"got {tuple(scores_t.shape)} and {tuple(relevant_t.shape)}",
            "pass one row per user and one column per item",
        )
    if torch.isnan(scores_t).any():
        raise GenlabError("scores contain NaN: the model produced NaN", "check the model's training for divergence")
    if not 1 <= k <= scores_t.shape[1]:
        raise GenlabError(f"k must be between 1 and the number of items ({scores_t.shape[1]}), got {k}")
    if exclude is not None:
        exclude_t = torch.as_tensor(exclude).detach().to(scores_t.device) != 0
        if exclude_t.shape != scores_t.shape:
            raise GenlabError(
                f"exclude must match scores' shape {tuple(scores_t.shape)}, got {tuple(exclude_t.shape)}"
            )
        scores_t = scores_t.masked_fill(exclude_t, -torch.inf)
        relevant_t = relevant_t & ~exclude_t
    num_relevant = relevant_t.sum(1)
    users = num_relevant > 0
    if not users.any():
        raise GenlabError(
            "no user has a relevant item, so recall and NDCG are undefined",
            "hold out some interactions per user as the relevant set",
        )
    top_k = scores_t[users].topk(k, dim=1).indices
    return relevant_t[users].gather(1, top_k).double(), num_relevant[users]


def recall_at_k(scores: ArrayLike, relevant: ArrayLike, k: int, exclude: ArrayLike | None = None) -> float:
    """Recall@k as in Mult-VAE (Liang et al. 2018): hits in the top k / min(k, #relevant).

    The min() makes a perfect ranking score 1 even when a user has more than k relevant
    items. Averaged over users with at least one relevant item. `exclude` marks items to
    ignore per user (e.g. the training interactions).
    """
    hits, num_relevant = _top_k_hits(scores, relevant, k, exclude)
    return float((hits.sum(1) / num_relevant.clamp(max=k)).mean())


def ndcg_at_k(scores: ArrayLike, relevant: ArrayLike, k: int, exclude: ArrayLike | None = None) -> float:
    """NDCG@k with binary relevance (Järvelin & Kekäläinen 2002, as used by Mult-VAE).

    DCG = sum_{r=1..k} rel_r / log2(r + 1), normalised by the DCG of the ideal ranking,
    which puts min(k, #relevant) relevant items first. Averaged over users with at least
    one relevant item; `exclude` as in `recall_at_k`.
    """
    hits, num_relevant = _top_k_hits(scores, relevant, k, exclude)
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=hits.device))
    dcg = (hits * discounts).sum(1)
    ideal_dcg = discounts.cumsum(0)[num_relevant.clamp(max=k) - 1]
    return float((dcg / ideal_dcg).mean())


def ranking_sums(scores: ArrayLike, relevant: ArrayLike, exclude: ArrayLike | None = None, *,
                 ndcg_ks: tuple[int, ...] = (100,), recall_ks: tuple[int, ...] = (20, 50)) -> dict[str, float]:
    """Per-batch sums of NDCG@k and Recall@k over the users with a relevant item, and their
    count ("users"): batches add up exactly (each mean is its sum / users), and a batch where no
    user has a relevant item adds nothing instead of failing. The same definitions as
    `ndcg_at_k` and `recall_at_k`; a k above the number of items ranks the whole catalogue."""
    names = [f"ndcg@{k}" for k in ndcg_ks] + [f"recall@{k}" for k in recall_ks]
    relevant_t = torch.as_tensor(relevant).detach() != 0
    if exclude is not None:
        relevant_t = relevant_t & ~(torch.as_tensor(exclude).detach().to(relevant_t.device) != 0)
    if not relevant_t.any():
        return {**{name: 0.0 for name in names}, "users": 0.0}
    n_items = relevant_t.shape[1]
    k_max = min(max((*ndcg_ks, *recall_ks)), n_items)
    hits, num_relevant = _top_k_hits(scores, relevant, k_max, exclude)  # [U', k_max], [U']
    out = {}
    for k in ndcg_ks:  # the key keeps the k asked for, even when the catalogue is smaller
        kk = min(k, n_items)
        discounts = 1.0 / torch.log2(torch.arange(2, kk + 2, dtype=torch.float64, device=hits.device))
        ideal = discounts.cumsum(0)[num_relevant.clamp(max=kk) - 1]
        out[f"ndcg@{k}"] = float(((hits[:, :kk] * discounts).sum(1) / ideal).sum())
    for k in recall_ks:
        kk = min(k, n_items)
        out[f"recall@{k}"] = float((hits[:, :kk].sum(1) / num_relevant.clamp(max=kk)).sum())
    out["users"] = float(len(num_relevant))
    return out
