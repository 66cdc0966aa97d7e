"""The `genlab` command: a thin layer over the Python API (genlab.api)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import GenlabError

EXAMPLES = {
    "train": """examples:
  genlab train vae-digits                              # the quick start: a VAE on 8x8 digits, ~1 min
  genlab train vae-mnist epochs=5 model.latent_dim=32  # dotted keys set nested settings
  genlab train vae-digits steps=200 --out runs/mine    # steps= instead of epochs=
  genlab train --resume runs/mine epochs=50            # continue a run (after Ctrl-C or a crash)
  torchrun --nproc_per_node 2 -m genlab train vae-mnist  # data-parallel on 2 processes""",
    "sample": """examples:
  genlab sample runs/vae-digits-... -n 64 --seed 0 -o grid.png
  genlab sample runs/cvae-mnist-... -n 10 --class 3 -o threes.png""",
    "eval": """examples:
  genlab eval runs/vae-mnist-...                        # likelihood + sample quality vs the test split
  genlab eval runs/vae-mnist-... --against mnist:test -n 10000 --seed 0 --metrics samples
  genlab eval runs/vae-mnist-... --metrics likelihood --iwae-k 5000 -n 1000 --against val

Sample-quality metrics are named with their feature space: fd[lenet-mnist] is the Frechet
distance in genlab's shipped MNIST LeNet features, not Inception's FID. Each is printed
beside its floor: the same metric between n real train images and the reference split.""",
    "info": "example:\n  genlab info runs/vae-digits-...",
    "recipes": "example:\n  genlab recipes",
    "datasets": "example:\n  genlab datasets",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlab",
        description="genlab: train, measure, apply and serve generative models.",
        epilog="""examples:
  genlab train vae-digits                    # quick start: train a VAE on the embedded 8x8 digits
  genlab sample runs/vae-digits-... -n 64 -o grid.png
  genlab eval runs/vae-digits-...
  genlab recipes | genlab datasets

Run `genlab COMMAND --help` for a command's options and examples.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("train", "train a recipe and write a model directory")
    p.add_argument("recipe", nargs="?", help="recipe name (see `genlab recipes`) or a path to a .yaml recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings to change, e.g. epochs=5 model.latent_dim=32")
    p.add_argument("--out", "-o", help="run/model directory (default: runs/RECIPE-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")

    p = add("sample", "draw samples from a trained model into an image grid")
    p.add_argument("model", help="model directory")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="label", type=int, help="class label (conditional models)")
    p.add_argument("-o", "--output", default="samples.png", help="PNG to write (default samples.png)")

    p = add("eval", "measure a model: likelihood bounds and sample quality (FD, KD, precision/recall, ...)")
    p.add_argument("model", help="model directory")
    p.add_argument("--against", metavar="DATASET[:SPLIT]",
                   help="reference data, e.g. mnist:test or just val (default: the model's data set, test split)")
    p.add_argument("-n", type=int, help="examples/samples (default: the whole split for likelihood, up to 10,000 samples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iwae-k", type=int, default=1000, help="importance samples for the IWAE bound (default 1000; 5000 for papers)")
    p.add_argument("--features", help="feature network: lenet-mnist, lenet-digits or inception (default: by image shape)")
    p.add_argument("--metrics", help="comma-separated groups: likelihood,samples (default: all the model supports)")

    p = add("info", "show a model's family, settings, size and metrics")
    p.add_argument("model", help="model directory")

    add("recipes", "list the training recipes")
    add("datasets", "list the data sets and whether they are available offline")
    return parser


def _cmd_train(args) -> None:
    from .api import train

    overrides = list(args.overrides)
    if args.resume:
        if args.recipe is not None:  # `train --resume DIR epochs=5`: argparse puts epochs=5 in recipe
            overrides.insert(0, args.recipe)
        run_dir = train(None, overrides, out=args.resume, resume=True)
    else:
        if args.recipe is None:
            raise GenlabError("which recipe?", "e.g. `genlab train vae-digits`; `genlab recipes` lists them")
        run_dir = train(args.recipe, overrides, out=args.out)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"model directory: {run_dir}")
    metrics_path = Path(run_dir) / "metrics.json"
    if (Path(run_dir) / "model.safetensors").is_file() and metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        test = "  ".join(f"{k} {v:.4g}" for k, v in metrics.get("test", {}).items())
        print(f"test metrics: {test}")
        for name in ("samples.png", "reconstructions.png", "metrics.json"):
            if (Path(run_dir) / name).is_file():
                print(f"  {Path(run_dir) / name}")
        print(f"next: genlab sample {run_dir} -n 64 -o grid.png   |   tensorboard --logdir {run_dir}/tensorboard")
    return 0


def _cmd_sample(args) -> None:
    from .api import sample, save_samples
    from .artifact import load
    from .models.base import check_sample_count

    check_sample_count(args.n)  # before loading, so a bad -n fails fast
    model = load(args.model)
    images = sample(model, args.n, seed=args.seed, condition=args.label)
    path = save_samples(model, images, args.output)
    print(f"wrote {args.n} samples to {path}")


def _cmd_eval(args) -> None:
    from .api import evaluate

    groups = tuple(g.strip() for g in args.metrics.split(",") if g.strip()) if args.metrics else None
    result = evaluate(args.model, against=args.against, n=args.n, seed=args.seed, iwae_k=args.iwae_k,
                      features=args.features, metrics=groups)
    if "likelihood" in result:
        lik = result["likelihood"]
        print(f"likelihood on {result['data']} (n={lik['n']}, IWAE k={lik['iwae_k']}, seed {result['seed']}; nats per image)")
        for key in ("elbo", "iwae_nll", "iwae_bits_per_dim", "recon_mse"):
            print(f"  {key:<28}{lik[key]:>12.4f}")
    if "samples" in result:
        sq = result["samples"]
        accuracy = f", test accuracy {sq['feature_test_accuracy']:.2%}" if sq["feature_test_accuracy"] else ""
        print(f"sample quality vs {result['data']} (n={sq['n']}, seed {result['seed']}; features {sq['feature_space']} "
              f"sha256 {sq['feature_weights_sha256'][:12]}{accuracy})")
        print(f"  {'metric':<36}{'model':>12}{'floor':>12}")
        for key, value in sq["metrics"].items():
            print(f"  {key:<36}{value:>12.4f}{sq['floor'][key]:>12.4f}")
        print(f"  floor: {sq['floor_definition']}")
    print(f"written to {Path(args.model) / 'metrics.json'} in {result['seconds']:.1f} s")


def _cmd_info(args) -> None:
    from .artifact import load, read_config

    config = read_config(args.model)
    model = load(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model      {args.model}")
    print(f"family     {config['family']}   recipe {config.get('recipe')}   genlab {config.get('genlab_version')}")
    print(f"parameters {n_params:,}")
    print(f"data       {json.dumps(config['data'])}")
    print(f"model      {json.dumps(config['model'])}")
    print(f"train      {json.dumps(config['train'])}")
    metrics_path = Path(args.model) / "metrics.json"
    if metrics_path.is_file():
        print(f"metrics    {metrics_path.read_text().strip()}")


def _cmd_recipes(args) -> None:
    from .config import list_recipes

    for name, description in list_recipes().items():
        print(f"{name:<16} {description}")


def _cmd_datasets(args) -> None:
    from .data import data_root
    from .data.images import DATASETS, dataset_status

    root = data_root()
    print(f"data directory: {root}  (set GENLAB_DATA_DIR to change)")
    for name, description in DATASETS.items():
        status = dataset_status(name, root)
        print(f"{name:<14} {status:<9} {description}")


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "eval": _cmd_eval, "info": _cmd_info,
            "recipes": _cmd_recipes, "datasets": _cmd_datasets}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args) or 0
    except GenlabError as e:
        from .errors import TrainingInterrupted

        print(f"{'stopped' if isinstance(e, TrainingInterrupted) else 'error'}: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 130 if isinstance(e, TrainingInterrupted) else 2
    except OSError as e:  # a file-system problem no GenlabError anticipated: still one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
