"""Benchmark: vae-mnist on dynamically binarised MNIST, the standard likelihood protocol.

Trains the `vae-mnist` recipe for a wall-clock budget (`genlab train vae-mnist --minutes M`:
the recipe's band for that budget, the schedule over the budget), then reports the test-set IWAE
NLL (k=5000 importance samples, all 10,000 test images, each binarised once with a fixed
seed), the test ELBO, wall time and training images/s. Writes bench/results/vae_mnist.json
(or --name NAME.json). Issue 18's target: <= 86.5 nats within 20 minutes of training.

    GENLAB_DATA_DIR=../shared/data python bench/vae_mnist.py            # the full run (~35 min)
    python bench/vae_mnist.py --budget-min 1 --iwae-k 100 --n-test 500  # a quick look
    python bench/vae_mnist.py model.prior=vampprior train.batch_size=256 --name vae_mnist_vampprior
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import fresh_run_dir, machine, print_rows, write_result  # noqa: E402
from genlab.api import evaluate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=20.0, help="training wall-clock budget in minutes")
    parser.add_argument("--name", default="vae_mnist", help="results file bench/results/NAME.json")
    parser.add_argument("--iwae-k", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-vae-mnist"))
    parser.add_argument("overrides", nargs="*", help="extra recipe overrides, e.g. model.latent_dim=50")
    args = parser.parse_args()

    out = Path(args.out)
    fresh_run_dir(out)
    overrides = ["train.progress=false", *args.overrides]
    t0 = time.perf_counter()
    genlab.train("vae-mnist", overrides, out=out, minutes=args.budget_min)
    train_wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    t1 = time.perf_counter()
    result = evaluate(out, against="test", iwae_k=args.iwae_k, n=args.n_test, seed=0, metrics=("likelihood",))["likelihood"]
    eval_wall = time.perf_counter() - t1
    config = json.loads((out / "config.json").read_text())
    steps_per_epoch = 54000 // config["train"]["batch_size"]  # 60,000 minus the 10% validation split
    record = {
        "benchmark": "vae_mnist",
        "recipe": "vae-mnist",
        "budget_min": args.budget_min,
        "overrides": overrides,
        "model": config["model"],
        "test_iwae_nll_nats": round(result["iwae_nll"], 3),
        "test_elbo_nats": round(result["elbo"], 3),
        "iwae_k": result["iwae_k"],
        "n_test": result["n"],
        "binarization": "dynamic (test images binarised once, seed 0)",
        "train_steps": metrics["training"]["steps"],
        "train_epochs": round(metrics["training"]["steps"] / steps_per_epoch, 2),
        "train_wall_s": round(train_wall, 1),
        "train_images_per_s": metrics["training"]["examples_per_s"],
        "eval_wall_s": round(eval_wall, 1),
        "target_nll_nats": 86.5,
        "meets_target": result["iwae_nll"] <= 86.5 and args.budget_min <= 20,
        "machine": machine(metrics["training"]["device"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genlab_version": genlab.__version__,
    }
    written = write_result(record, name=args.name)
    rows = [
        ("test IWAE NLL (nats)", f"{record['test_iwae_nll_nats']:.2f}", f"k={record['iwae_k']}, n={record['n_test']}; target <= 86.5"),
        ("test ELBO (nats)", f"{record['test_elbo_nats']:.2f}", ""),
        ("training", f"{record['train_wall_s']:.0f} s", f"{record['train_epochs']} epochs, {record['train_steps']} steps"),
        ("training images/s", f"{record['train_images_per_s']:.0f}", record["machine"]["device"]),
        ("evaluation", f"{record['eval_wall_s']:.0f} s", ""),
    ]
    print_rows(rows)
    print(f"written to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
