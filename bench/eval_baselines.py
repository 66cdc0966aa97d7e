"""Benchmark: sample-quality metrics on MNIST with genlab's shipped LeNet features.

Rows: the floor (10,000 real train images vs the 10,000 test images), pure noise, and a
VAE trained by the foundation recipe (`vae-mnist`). Also reports the feature network's
test accuracy (recomputed here) and how long FD + KD + precision/recall take on 10,000
samples. Writes bench/results/eval_baselines.json.

    GENLAB_DATA_DIR=../shared/data python bench/eval_baselines.py [--vae runs/bench-vae-mnist]

Without --vae (or if that directory does not exist) it trains vae-mnist for --train-min minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import write_result  # noqa: E402
from genlab.data import load_image_data  # noqa: E402
from genlab.evaluation import draw_samples, real_images  # noqa: E402
from genlab.metrics import image as image_metrics  # noqa: E402
from genlab.metrics.features import load_feature_extractor  # noqa: E402


def score(extractor, real_features, images, seed) -> dict:
    t = time.perf_counter()
    features = extractor.features(images)
    probabilities = extractor.probabilities(images)
    features_s = time.perf_counter() - t
    t = time.perf_counter()
    fd = image_metrics.fid(real_features, features)
    kd, kd_std = image_metrics.kid(real_features, features, seed=seed)
    pr = image_metrics.precision_recall(real_features, features, k=3)
    metrics_s = time.perf_counter() - t
    dc = image_metrics.density_coverage(real_features, features, k=5)
    score_mean, _ = image_metrics.inception_score(probabilities, splits=10)
    share = image_metrics.class_histogram(probabilities.argmax(1), 10)
    return {"fd": fd, "kd": kd, "kd_std": kd_std, **pr, **dc, "classifier_score": score_mean,
            "class_share_min": float(share.min()), "class_share_max": float(share.max()),
            "features_s": round(features_s, 2), "fd_kd_pr_s": round(metrics_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default=str(REPO / "runs" / "bench-vae-mnist"), help="a trained vae-mnist model directory")
    parser.add_argument("--train-min", type=float, default=3.0, help="training budget if the VAE has to be trained")
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    vae_dir = Path(args.vae)
    if not (vae_dir / "model.safetensors").is_file():
        vae_dir = REPO / "runs" / "bench-eval-vae"
        genlab.train("vae-mnist", [f"train.time_budget_s={args.train_min * 60}", "epochs=100"], out=vae_dir)
    data = load_image_data("mnist")
    extractor = load_feature_extractor("lenet-mnist")
    test_images = data.test.images.float() / 255
    accuracy = (extractor.probabilities(test_images).argmax(1) == data.test.labels).double().mean().item()

    n, seed = args.n, args.seed
    real = real_images(data, "test", n, seed)
    real_features = extractor.features(real)
    generator = torch.Generator().manual_seed(seed)
    rows = {
        "floor: real train vs test": score(extractor, real_features, real_images(data, "train", n, seed + 1), seed),
        "pure noise (uniform)": score(extractor, real_features, torch.rand(n, 1, 28, 28, generator=generator), seed),
        f"vae-mnist ({vae_dir.name})": score(extractor, real_features, draw_samples(genlab.load(vae_dir), n, seed), seed),
    }
    record = {
        "benchmark": "eval_baselines",
        "feature_space": "lenet-mnist",
        "feature_weights_sha256": extractor.weights_sha256,
        "feature_test_accuracy_recorded": extractor.test_accuracy,
        "feature_test_accuracy_measured": accuracy,
        "n": n,
        "seed": seed,
        "reference": "mnist:test",
        "rows": rows,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genlab_version": genlab.__version__,
    }
    written = write_result(record, name="eval_baselines")
    print(f"\nfeatures lenet-mnist@{extractor.short_hash}: MNIST test accuracy {accuracy:.2%} "
          f"(recorded {extractor.test_accuracy:.2%}); n={n}, reference mnist:test")
    columns = ["fd", "kd", "precision", "recall", "density", "coverage", "classifier_score", "fd_kd_pr_s"]
    print(f"{'':<32}" + "".join(f"{c:>12}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<32}" + "".join(f"{row[c]:>12.4g}" for c in columns))
    print(f"written to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
