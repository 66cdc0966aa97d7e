"""Benchmark: recommenders under the strong-generalisation protocol (Liang et al. 2018).

1. Quality on the planted synthetic set (3,000 users x 300 items, 10 groups; genlab's recipes
   multvae-synthetic, multdae-synthetic, ease-synthetic, popularity-synthetic): NDCG@100,
   Recall@20 and Recall@50 on the test users, beside the true generating model (the ceiling).
2. Speed on an ML-20M-sized synthetic matrix (136,677 users x 20,108 items, ~10M clicks, with a
   popularity skew): Mult-VAE training in users/s (batches of 500, the paper's I-600-200), and
   EASE's fit (the Gram matrix and one closed-form solve) time and peak memory, in a child
   process so its peak is its own. Neither densifies the whole user matrix.
3. When ml-20m.zip is in GENLAB_DATA_DIR/ml-20m/: the paper's protocol and settings
   (multvae-ml20m, ease-ml20m, popularity-ml20m); otherwise it says it is absent.

Writes bench/results/recommend.json.

    python bench/recommend.py                        # all of it (~6 min on 2 cores)
    python bench/recommend.py --vae-batches 20       # a quicker speed estimate (a part of the epoch)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import genlab  # noqa: E402
from common import fresh_run_dir, machine, write_result  # noqa: E402

ML20M_USERS, ML20M_ITEMS, ML20M_CLICKS = 136_677, 20_108, 10_000_000
PUBLISHED = {  # Liang et al. 2018 (Mult-VAE, Mult-DAE) and Steck 2019 (EASE), ML-20M test users
    "multvae": (0.426, 0.395, 0.537), "multdae": (0.419, 0.387, 0.524), "ease": (0.420, 0.391, 0.521)}


def ml20m_sized_matrix(seed: int = 0) -> sp.csr_matrix:
    """136,677 x 20,108 clicks, ~10M: clicks per user log-normal (mean ~73, a long tail as on
    ML-20M), items by a Zipf popularity; duplicates within a user collapse."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(3.7, 1.0, ML20M_USERS), 5, 3000).astype(np.int64)
    # ~18% of the draws repeat an item the user already has (popular items): ask for more so ~10M remain
    counts = np.maximum(5, (counts * (1.2 * ML20M_CLICKS / counts.sum())).astype(np.int64))
    popularity = 1.0 / np.arange(1, ML20M_ITEMS + 1) ** 0.9
    popularity /= popularity.sum()
    items = rng.choice(ML20M_ITEMS, size=int(counts.sum()), p=popularity)
    users = np.repeat(np.arange(ML20M_USERS), counts)
    matrix = sp.csr_matrix((np.ones(len(items), np.float32), (users, items)), shape=(ML20M_USERS, ML20M_ITEMS))
    matrix.data[:] = 1.0  # duplicates were summed: clicks are 0/1
    return matrix


def synthetic_quality(out: Path) -> dict:
    rows = {}
    for family in ("multvae", "multdae", "ease", "popularity"):
        run = fresh_run_dir(out / family)
        t0 = time.perf_counter()
        genlab.train(f"{family}-synthetic", ["train.progress=false"], out=run)
        seconds = time.perf_counter() - t0
        result = genlab.evaluate(run, progress=False)
        rows[family] = {**result["ranking"]["test"][family], "train_s": round(seconds, 1)}
        ceiling, protocol = result["ranking"]["test"]["ceiling"], result["protocol"]
    return {"test": {**rows, "ceiling": ceiling}, "protocol": protocol}


def vae_speed(matrix: sp.csr_matrix, batches: int) -> dict:
    from genlab.data.interactions import dense
    from genlab.models.multvae import MultVAE, MultVAEConfig

    torch.manual_seed(0)
    model = MultVAE(MultVAEConfig(num_items=matrix.shape[1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = np.random.default_rng(0).permutation(matrix.shape[0])
    steps_per_epoch = matrix.shape[0] // 500
    batches = min(batches, steps_per_epoch)
    model.train()
    t0 = time.perf_counter()
    for b in range(batches):  # the Trainer's step, without its bookkeeping
        x = dense(matrix[order[b * 500:(b + 1) * 500]])  # only these 500 rows become dense: [500, 20108]
        loss = model.loss(x, b)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - t0
    users_per_s = batches * 500 / seconds
    return {"users_per_s": round(users_per_s, 1), "batches_measured": batches, "steps_per_epoch": steps_per_epoch,
            "epoch_s": round(matrix.shape[0] / users_per_s, 1), "full_epoch": batches == steps_per_epoch,
            "threads": torch.get_num_threads()}


def ease_child(dtype: str) -> None:
    """Runs in a child process: the Gram matrix and one closed-form solve; prints JSON."""
    from genlab.models.ease import DTYPES, ease_weights, gram_matrix

    matrix = ml20m_sized_matrix()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    gram = gram_matrix(matrix, DTYPES[dtype])
    t1 = time.perf_counter()
    weights = ease_weights(gram, 500.0)
    t2 = time.perf_counter()
    assert weights.shape == (ML20M_ITEMS, ML20M_ITEMS) and torch.isfinite(weights).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    print(json.dumps({"dtype": dtype, "gram_s": round(t1 - t0, 1), "solve_s": round(t2 - t1, 1),
                      "fit_s": round(t2 - t0, 1), "peak_rss_gib": round(peak / 2**20, 2),
                      "rss_before_fit_gib": round(base / 2**20, 2)}))


def ml20m(out: Path) -> dict:
    from genlab.data.download import data_root

    zip_path = data_root() / "ml-20m" / "ml-20m.zip"
    if not zip_path.is_file():
        return {"status": f"absent: {zip_path} is not on this machine, so the paper's protocol was not run"}
    rows = {}
    for family in ("popularity", "ease", "multvae"):
        run = fresh_run_dir(out / f"{family}-ml20m")
        genlab.train(f"{family}-ml20m", ["train.progress=false"], out=run)
        rows[family] = genlab.evaluate(run, progress=False)["ranking"]["test"][family]
    gap = rows["multvae"]["ndcg@100"] - PUBLISHED["multvae"][0]
    return {"status": "ran", "test": rows, "multvae_ndcg_gap": round(gap, 4), "within_0.005": abs(gap) <= 0.005}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae-batches", type=int, default=273, help="Mult-VAE batches of 500 timed (273 = one epoch)")
    parser.add_argument("--ease-dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-recommend"))
    parser.add_argument("--ease-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ease_child:
        ease_child(args.ease_child)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    quality = synthetic_quality(out)
    print("synthetic quality done", file=sys.stderr)
    matrix = ml20m_sized_matrix()
    shape = {"users": matrix.shape[0], "items": matrix.shape[1], "clicks": int(matrix.nnz)}
    vae = vae_speed(matrix, args.vae_batches)
    del matrix
    print("vae speed done", file=sys.stderr)
    child = subprocess.run([sys.executable, __file__, "--ease-child", args.ease_dtype], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": str(REPO / "bench")})
    ease = json.loads(child.stdout.strip().splitlines()[-1])
    paper = ml20m(out)
    record = {"benchmark": "recommend", "synthetic": quality, "ml20m_sized": {**shape, "multvae": vae, "ease": ease},
              "ml20m": paper, "published_ml20m": PUBLISHED, "machine": machine("cpu"),
              "wall_s": round(time.perf_counter() - t0, 1)}
    path = write_result(record, name="recommend")
    print_table(record)
    print(f"\nwritten to {path}")
    return 0


def print_table(record: dict) -> None:
    q = record["synthetic"]
    p = q["protocol"]
    print(f"\nplanted synthetic set: {p['users']['train']:,} train / {p['users']['val']:,} val / {p['users']['test']:,} "
          f"test users, {p['items']} items, {p['clicks']:,} clicks; test users, seed {p['seed']}")
    print(f"{'model':<22}{'NDCG@100':>10}{'Recall@20':>11}{'Recall@50':>11}{'train s':>9}")
    for name, row in q["test"].items():
        label = "true model (ceiling)" if name == "ceiling" else name
        train_s = f"{row['train_s']:>9.1f}" if "train_s" in row else f"{'':>9}"
        print(f"{label:<22}{row['ndcg@100']:>10.4f}{row['recall@20']:>11.4f}{row['recall@50']:>11.4f}{train_s}")
    s = record["ml20m_sized"]
    v, e = s["multvae"], s["ease"]
    print(f"\nML-20M-sized synthetic matrix: {s['users']:,} users x {s['items']:,} items, {s['clicks']:,} clicks")
    print(f"  Mult-VAE (I-600-200, batch 500) training: {v['users_per_s']:,.0f} users/s "
          f"({v['batches_measured']} of {v['steps_per_epoch']} batches timed; one epoch ~ {v['epoch_s']:.0f} s, "
          f"{v['threads']} threads)")
    print(f"  EASE fit ({e['dtype']}): Gram {e['gram_s']} s + solve {e['solve_s']} s = {e['fit_s']} s; "
          f"peak memory {e['peak_rss_gib']} GiB (process RSS, {e['rss_before_fit_gib']} GiB before the fit)")
    print(f"\nML-20M: {record['ml20m']['status']}")
    print("published on ML-20M (not measured here): " + "; ".join(
        f"{k} {v[0]}/{v[1]}/{v[2]}" for k, v in record["published_ml20m"].items()) + " (NDCG@100/Recall@20/Recall@50)")


if __name__ == "__main__":
    sys.exit(main())
