"""Benchmark: diffusion on MNIST on CPUs, measured in LeNet features beside the GAN and VAE rows.

Trains (or takes the run directories of) the latent recipes `ldm-mnist` (unconditional) and
`cfg-mnist` (class-conditional, classifier-free guidance), then reports, on --n samples against
the MNIST test split in the shipped `lenet-mnist` feature space:

- unconditional (ldm-mnist with its own sampler, model.sampler and model.sample_steps, or
  --sampler and --steps): FD / KD / precision / recall / coverage, the predicted-class shares,
  sampling images/s, and the training wall time (autoencoder included);
- the autoencoder's reconstructions of the test images, what the first stage allows;
- the sampler comparison on --compare-n samples from the same model: the two ODE samplers,
  DPM-Solver++ at 20 steps against DDIM (eta 0) at 250 steps, and the model's own sampler, FD
  and images/s of each;
- guided (cfg-mnist, each --guidance scale): --n samples, an equal number per class; the share
  the feature classifier labels with the requested class, and FD etc. of those samples;
- the floor (real train images against the test split) and the GAN and VAE rows of
  bench/results/gan_mnist.json and eval_baselines.json (vae-mnist; read from those files, with their dates).

Writes bench/results/diffusion_mnist.json and prints a table.

    GENLAB_DATA_DIR=../shared/data python bench/diffusion_mnist.py                 # trains both recipes (~50 min)
    python bench/diffusion_mnist.py --ldm runs/ldm-mnist --cfg runs/cfg-mnist       # measure trained runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import fresh_run_dir, machine, write_result  # noqa: E402
from genlab.data import load_image_data  # noqa: E402
from genlab.evaluation import real_images, sample_quality_metrics  # noqa: E402
from genlab.metrics.features import load_feature_extractor  # noqa: E402
from genlab.metrics.image import class_histogram  # noqa: E402

BATCH = 1000
COLUMNS = ("fd", "kd", "precision", "recall", "coverage", "class_share_min", "class_share_max")


@torch.no_grad()
def draw(model, n: int, seed: int, labels: torch.Tensor | None = None, **options) -> tuple[torch.Tensor, float]:
    """n samples in [0, 1] and the images/s it took (batches of 1,000, one seeded generator)."""
    generator = torch.Generator().manual_seed(seed)
    low, high = model.data_range
    parts = []
    start = time.perf_counter()
    for first in range(0, n, BATCH):
        count = min(BATCH, n - first)
        condition = None if labels is None else labels[first : first + count]
        images = model.sample(count, condition=condition, generator=generator, **options)
        parts.append(((images - low) / (high - low)).clamp(0, 1))
    return torch.cat(parts), n / (time.perf_counter() - start)


def measure(extractor, real_features, images: torch.Tensor, seed: int) -> dict:
    probabilities = extractor.probabilities(images)
    row = sample_quality_metrics(real_features, extractor.features(images), probabilities, seed)
    row["class_histogram"] = [round(float(s), 4) for s in class_histogram(probabilities.argmax(1), 10)]
    return row, probabilities


def train_or_take(recipe: str, given: str | None) -> Path:
    if given:
        return Path(given)
    return genlab.train(recipe, [], out=fresh_run_dir(REPO / "runs" / f"bench-{recipe}"))


def training_facts(run: Path) -> dict:
    training = json.loads((run / "metrics.json").read_text())["training"]
    config = json.loads((run / "config.json").read_text())
    return {"run": str(run.relative_to(REPO)) if run.is_relative_to(REPO) else run.name,
            "train_steps": training["steps"], "train_wall_min": round(training["wall_time_s"] / 60, 2),
            "autoencoder_steps": config["model"].get("autoencoder_steps") if config["model"].get("latent_channels") else 0}


def other_rows() -> dict:
    """The GAN and VAE rows of the same table, as their own benchmarks recorded them."""
    rows = {}
    for name in ("gan_mnist", "eval_baselines"):
        path = REPO / "bench" / "results" / f"{name}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        for recipe, row in record.get("rows", {}).items():
            if isinstance(row, dict) and "fd" in row and not recipe.startswith(("floor", "pure noise")):
                rows[recipe] = {**{c: row.get(c) for c in COLUMNS}, "source": f"{name}.json ({record.get('date', '?')})",
                                "conditional_accuracy": row.get("conditional_accuracy")}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ldm", help="a trained ldm-mnist run directory (default: train one)")
    parser.add_argument("--cfg", help="a trained cfg-mnist run directory (default: train one; 'none': no guided rows)")
    parser.add_argument("--sampler", help="the unconditional row's sampler (default: the model's own, model.sampler)")
    parser.add_argument("--steps", type=int, help="the unconditional row's sampler steps (default: model.sample_steps)")
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--compare-n", type=int, default=2_000, help="samples per sampler in the sampler comparison")
    parser.add_argument("--guidance", type=float, nargs="+", default=[2.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="where the results go (default bench/results/diffusion_mnist.json)")
    args = parser.parse_args()

    extractor = load_feature_extractor("lenet-mnist")
    data = load_image_data({"name": "mnist"})
    real = real_images(data, "test", args.n, args.seed)
    real_features = extractor.features(real)
    floor, _ = measure(extractor, real_features, real_images(data, "train", args.n, args.seed + 1), args.seed)
    compare_real = extractor.features(real[: args.compare_n])
    rows = {}

    ldm_run = train_or_take("ldm-mnist", args.ldm)
    ldm = genlab.load(ldm_run)
    # The model's own sampler (the recipe's model.sampler and model.sample_steps, as `genlab sample` draws) unless given.
    unconditional = (args.sampler or ldm.config.sampler, args.steps or ldm.config.sample_steps)
    sampler, steps = unconditional
    images, rate = draw(ldm, args.n, args.seed, sampler=sampler, steps=steps)
    row, _ = measure(extractor, real_features, images, args.seed)
    rows[f"ldm-mnist {sampler} {steps}"] = {**row, **training_facts(ldm_run), "sample_images_per_s": rate, "n": args.n}
    # What the first stage allows: the autoencoder's reconstructions of the test images themselves.
    with torch.no_grad():
        low, high = ldm.data_range
        mean, _ = ldm.autoencoder.posterior(ldm.to_diffusion_space(real * (high - low) + low))
        reconstructions = ((ldm.to_data_space(ldm.autoencoder.decode(mean)) - low) / (high - low)).clamp(0, 1)
    row, _ = measure(extractor, real_features, reconstructions, args.seed)
    rows["ldm-mnist reconstructions"] = {**row, "n": args.n,
                                         "note": "the autoencoder's reconstructions of the test images (not samples)"}
    comparison = {}
    for sampler, steps in dict.fromkeys((("dpm++", 20), ("ddim", 250), unconditional)):  # each pair once
        images, rate = draw(ldm, args.compare_n, args.seed + 7, sampler=sampler, steps=steps)
        values, _ = measure(extractor, compare_real, images, args.seed)
        comparison[f"{sampler} {steps}"] = {"fd": values["fd"], "images_per_s": rate, "n": args.compare_n}
    dpm, ddim = comparison["dpm++ 20"]["fd"], comparison["ddim 250"]["fd"]
    comparison["dpm_over_ddim"] = dpm / ddim

    labels = torch.arange(10).repeat_interleave(args.n // 10)
    cfg_run = None if args.cfg == "none" else train_or_take("cfg-mnist", args.cfg)
    cfg = genlab.load(cfg_run) if cfg_run else None
    for scale in args.guidance if cfg is not None else ():
        images, rate = draw(cfg, len(labels), args.seed, labels=labels, guidance_scale=scale)
        row, probabilities = measure(extractor, real_features, images, args.seed)
        row["conditional_accuracy"] = (probabilities.argmax(1) == labels).double().mean().item()
        rows[f"cfg-mnist w={scale:g}"] = {**row, **training_facts(cfg_run), "sample_images_per_s": rate, "n": len(labels)}

    record = {
        "benchmark": "diffusion_mnist", "n": args.n, "seed": args.seed, "feature_space": "lenet-mnist",
        "feature_weights_sha256": extractor.weights_sha256, "feature_test_accuracy": extractor.test_accuracy,
        "floor": {c: floor[c] for c in COLUMNS}, "rows": rows, "sampler_comparison": comparison,
        "other_families": other_rows(), "machine": machine(str(ldm.device)),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "genlab_version": genlab.__version__,
    }
    written = write_result(record, path=args.json, name="diffusion_mnist")

    print(f"\n{'':<22}" + "".join(f"{c:>17}" for c in COLUMNS) + f"{'cond. acc.':>12}{'img/s':>9}{'train min':>11}")
    print(f"{'floor':<22}" + "".join(f"{floor[c]:>17.4g}" for c in COLUMNS))
    for name, row in {**rows, **record["other_families"]}.items():
        acc = row.get("conditional_accuracy")
        cells = "".join(f"{row[c]:>17.4g}" if row.get(c) is not None else f"{'-':>17}" for c in COLUMNS)
        rate = f"{row['sample_images_per_s']:.0f}" if "sample_images_per_s" in row else "-"
        minutes = f"{row['train_wall_min']:.1f}" if "train_wall_min" in row else "-"
        print(f"{name:<22}{cells}{(f'{acc:.2%}' if acc is not None else '-'):>12}{rate:>9}{minutes:>11}")
    print(f"\nsamplers on {args.compare_n} samples of ldm-mnist: " + ", ".join(
        f"{k}: FD {v['fd']:.3g} at {v['images_per_s']:.0f} images/s" for k, v in comparison.items() if isinstance(v, dict))
        + f"; DPM-Solver++ 20 / DDIM 250 = {comparison['dpm_over_ddim']:.3f}")
    print(f"written to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
