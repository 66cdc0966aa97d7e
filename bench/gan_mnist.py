"""Benchmark: the MNIST GAN recipes under a wall-clock budget each, measured in LeNet features.

For each of dcgan-mnist, wgangp-mnist, sngan-mnist and cgan-mnist: train for --budget-min
minutes, then report FD / KD / precision / recall of 10,000 samples (EMA generator) against
the MNIST test split in the shipped `lenet-mnist` feature space, beside the floor (10,000
real train images vs the test split), and the training images/s. For cgan-mnist also the
share of 10,000 conditional samples (1,000 per class) that the feature classifier labels
with the requested class; for the best unconditional model, the share of each class among
10,000 unconditional samples. Writes bench/results/gan_mnist.json.

    GENLAB_DATA_DIR=../shared/data python bench/gan_mnist.py --budget-min 20
    python bench/gan_mnist.py --budget-min 3 --recipes dcgan-mnist -n 5000 --json /tmp/look.json lr=0.0005   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import plain_metric_names, write_result  # noqa: E402
from genlab.evaluation import evaluate  # noqa: E402
from genlab.metrics.features import load_feature_extractor  # noqa: E402

RECIPES = ("dcgan-mnist", "wgangp-mnist", "sngan-mnist", "cgan-mnist")


@torch.no_grad()
def conditional_accuracy(model, extractor, n: int, seed: int) -> float:
    """Share of class-conditional samples the feature classifier labels with the requested class."""
    labels = torch.arange(10).repeat_interleave(n // 10)
    generator = torch.Generator().manual_seed(seed)
    low, high = model.config.data_range
    correct = 0
    for chunk in labels.split(1000):
        images = (model.sample(len(chunk), condition=chunk, generator=generator) - low) / (high - low)
        correct += (extractor.probabilities(images.clamp(0, 1)).argmax(1) == chunk).sum().item()
    return correct / len(labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=20.0, help="training budget per recipe, minutes")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="where the results go (default bench/results/gan_mnist.json; "
                                           "point quick looks elsewhere so they never pass for the recorded run)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every recipe, e.g. model.base_channels=32")
    args = parser.parse_args()

    extractor = load_feature_extractor("lenet-mnist")
    rows = {}
    floor = None
    for recipe in args.recipes:
        out = REPO / "runs" / f"bench-{recipe}"
        if out.exists():
            shutil.rmtree(out)
        try:
            genlab.train(recipe, ["epochs=1000", f"train.time_budget_s={args.budget_min * 60}", *args.overrides], out=out)
        except genlab.GenlabError as e:  # e.g. a detected collapse: report it as the result
            rows[recipe] = {"error": e.message}
            continue
        training = json.loads((out / "metrics.json").read_text())["training"]
        result = evaluate(out, n=args.n, seed=args.seed, metrics=("samples",))["samples"]
        space = result["feature_space"]
        row = plain_metric_names(result["metrics"], space)
        row.update({"class_histogram": result["class_histogram"], "train_steps": training["steps"],
                    "train_images_per_s": training["examples_per_s"], "train_wall_s": training["wall_time_s"]})
        floor = plain_metric_names(result["floor"], space)
        if recipe.startswith("cgan"):
            row["conditional_accuracy"] = conditional_accuracy(genlab.load(out), extractor, args.n, args.seed)
        rows[recipe] = row
    unconditional = {k: v for k, v in rows.items() if not k.startswith("cgan") and "error" not in v}
    best = min(unconditional, key=lambda k: unconditional[k]["fd"]) if unconditional else None
    record = {
        "benchmark": "gan_mnist",
        "budget_min_per_recipe": args.budget_min,
        "overrides": args.overrides,
        "n": args.n,
        "seed": args.seed,
        "feature_space": "lenet-mnist",
        "feature_weights_sha256": extractor.weights_sha256,
        "feature_test_accuracy": extractor.test_accuracy,
        "floor": floor,
        "rows": rows,
        "best_unconditional": best,
        "best_fd_over_floor": rows[best]["fd"] / floor["fd"] if best else None,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genlab_version": genlab.__version__,
    }
    written = write_result(record, path=args.json, name="gan_mnist")
    columns = ["fd", "kd", "precision", "recall", "class_share_min", "class_share_max", "train_images_per_s"]
    print(f"\n{'':<16}" + "".join(f"{c:>19}" for c in columns) + f"{'cond. acc.':>12}")
    if floor:
        print(f"{'floor':<16}" + "".join(f"{floor.get(c, float('nan')):>19.4g}" for c in columns))
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:<16}failed: {row['error']}")
            continue
        acc = f"{row['conditional_accuracy']:.2%}" if "conditional_accuracy" in row else ""
        print(f"{name:<16}" + "".join(f"{row[c]:>19.4g}" for c in columns) + f"{acc:>12}")
    if best:
        print(f"best unconditional: {best}, fd {rows[best]['fd']:.3g} = {record['best_fd_over_floor']:.1f}x the floor (target <= 5x)")
    print(f"written to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
