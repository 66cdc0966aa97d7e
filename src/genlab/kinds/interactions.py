"""The interactions data kind: implicit feedback (who clicked what) for the recommender families
(multvae, multdae, ease, popularity), split by the strong-generalisation protocol of Liang et al.
2018 (genlab/data/interactions.py).

`genlab eval MODEL` ranks every item for each held-out user from their fold-in clicks (fold-in
items excluded) and reports NDCG@100, Recall@20 and Recall@50 (denominator min(k, evaluated
items)) on the validation and test users, beside popularity's and EASE's figures on the same
users, and on the synthetic set the true generating model's (the ceiling). The protocol and its
seed go into metrics.json with them.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..config import from_dict
from ..data.interactions import (INTERACTION_DATASETS, InteractionData, InteractionsSpec, interaction_dataset_status,
                                 load_interactions)
from ..errors import GenlabError
from ..metrics.ranking import ranking_sums
from ..models.ease import ease_weights, gram_matrix
from ..registry import Catalogue, DataKind, register_data_kind

METRICS = {"ndcg_ks": (100,), "recall_ks": (20, 50)}
COLUMNS = ("ndcg@100", "recall@20", "recall@50")
EVAL_BATCH = 500  # users scored at once: [500, I] floats
EASE_GRID = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
EASE_GRID_MAX_ITEMS = 4000  # above this, each solve takes a while: the baseline uses Steck's ML-20M l2 alone
EASE_DEFAULT_L2 = 500.0


@torch.no_grad()
def split_metrics(score, data: InteractionData, split: str, progress: bool = False, desc: str = "") -> dict:
    """Mean NDCG@100, Recall@20, Recall@50 over the split's users with an evaluated item;
    score: [B, I] fold-in clicks -> [B, I] scores."""
    n = data.num_examples(split)
    totals: dict[str, float] = {}
    for start in tqdm(range(0, n, EVAL_BATCH), disable=not progress, unit="batch", desc=desc or split):
        idx = np.arange(start, min(n, start + EVAL_BATCH))
        batch = data.batch(split, idx)
        sums = ranking_sums(score(batch["x"]).float().cpu(), batch["heldout"], exclude=batch["x"], **METRICS)
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + value
    users = totals.pop("users")
    return {**{key: value / users for key, value in totals.items()}, "users": int(users)}


def popularity_scorer(data: InteractionData):
    counts = torch.from_numpy(np.asarray(data.train.sum(0), dtype=np.float32).ravel())
    return lambda x: counts.expand(x.shape[0], -1)


def ease_baseline(data: InteractionData, progress: bool) -> tuple[float, object, str]:
    """EASE with l2 chosen on the validation users (a grid), or Steck's 500 on large catalogues."""
    gram = gram_matrix(data.train, torch.float64)
    grid = EASE_GRID if data.num_items <= EASE_GRID_MAX_ITEMS else (EASE_DEFAULT_L2,)
    best = None
    for l2 in grid:
        weights = ease_weights(gram, l2)
        scorer = (lambda w: lambda x: x @ w)(weights)
        ndcg = split_metrics(scorer, data, "val")["ndcg@100"] if len(grid) > 1 else 0.0
        if best is None or ndcg > best[0]:
            best = (ndcg, l2, scorer)
    how = (f"l2 {best[1]:g}, chosen on the validation users from {', '.join(f'{v:g}' for v in grid)}" if len(grid) > 1
           else f"l2 {best[1]:g} (Steck's ML-20M value; no search above {EASE_GRID_MAX_ITEMS:,} items)")
    return best[1], best[2], how


def load_for(model, against: str | None) -> tuple[InteractionData, tuple[str, ...]]:
    config = model.artifact_config
    spec = from_dict(InteractionsSpec, config["data"], "data")
    splits = ("val", "test")
    if against is not None:
        if against not in ("val", "test", f"{spec.name}:val", f"{spec.name}:test"):
            raise GenlabError(f"--against {against!r}: a recommender is evaluated on the held-out users of its own data",
                              "use --against val or --against test (or leave it out for both)")
        splits = (against.rpartition(":")[2],)
    data = load_interactions(spec)
    if tuple(int(i) for i in data.item_ids) != tuple(model.config.item_ids):
        raise GenlabError(f"the items of {spec.name} are not those the model was trained on",
                          "the data changed since training; train the model again")
    return data, splits


def evaluate_interactions(model, *, against: str | None = None, progress: bool = True, **_) -> dict:
    model.require("recommend", "the ranking metrics")
    data, splits = load_for(model, against)
    rows = {split: {} for split in splits}
    for split in splits:
        rows[split][model.family] = split_metrics(model.scores, data, split, progress, f"{model.family} ({split})")
    if model.family != "popularity":
        popularity = popularity_scorer(data)  # counts over the train split: once for every split
        for split in splits:
            rows[split]["popularity"] = split_metrics(popularity, data, split)
    ease_note = None
    if model.family != "ease":
        _, scorer, ease_note = ease_baseline(data, progress)
        for split in splits:
            rows[split]["ease"] = split_metrics(scorer, data, split)
    else:
        ease_note = f"l2 {float(model.l2):g} (this model)"
    if data.truth is not None:  # synthetic: rank by the true p(item | user's group)
        for split in splits:
            truth = torch.from_numpy(data.truth[split].astype(np.float32))
            rows[split]["ceiling"] = split_metrics(_rows_of(truth), data, split)
    return {"data": data.spec.name, "seed": data.protocol["seed"], "protocol": data.protocol, "ranking": rows,
            "ease": ease_note}


def _rows_of(table: torch.Tensor):
    """A scorer that returns the next rows of a fixed [n, I] table (split_metrics walks the split in order)."""
    position = [0]

    def score(x):
        start = position[0]
        position[0] += len(x)
        return table[start:start + len(x)]

    return score


def report(result: dict) -> list[str]:
    p = result["protocol"]
    lines = [f"ranking the held-out users of {result['data']}: {p['name']}, seed {result['seed']}",
             f"  {p['users']['train']:,} training users, {p['users']['val']:,} validation and {p['users']['test']:,} "
             f"test users, {p['items']:,} items; fold-in items are excluded from each ranking",
             f"  {'split':<7}{'model':<24}{'NDCG@100':>10}{'Recall@20':>11}{'Recall@50':>11}{'users':>8}"]
    for split, models in result["ranking"].items():
        for i, (name, row) in enumerate(models.items()):
            label = {"ceiling": "true model (ceiling)"}.get(name, name)
            lines.append(f"  {split if i == 0 else '':<7}{label:<24}{row['ndcg@100']:>10.4f}{row['recall@20']:>11.4f}"
                         f"{row['recall@50']:>11.4f}{row['users']:>8,}")
    lines.append(f"  ease: {result['ease']}; recall@k divides by min(k, evaluated items)")
    return lines


def recommend_instead(model, options: dict) -> None:
    raise GenlabError(f"{options['model_dir']} is a recommender: it ranks items for a history of clicks rather than "
                      "drawing samples", f"genlab apply recommend {options['model_dir']} --items ID,ID,... -k 10")


def next_steps(run_dir) -> str:
    return f"next: genlab eval {run_dir}   |   genlab apply recommend {run_dir} --items ID,ID,... -k 10"


INTERACTIONS = register_data_kind(DataKind(
    name="interactions",
    spec_class=InteractionsSpec,
    load=lambda spec, resumed_run: load_interactions(spec),
    catalogue=Catalogue("interactions (multvae, multdae, ease, popularity; genlab apply recommend)",
                        INTERACTION_DATASETS, interaction_dataset_status),
    evaluate=evaluate_interactions,
    report=report,
    sample=recommend_instead,
    next_steps=next_steps,
    endpoint="/v1/recommendations",
))
