"""Benchmark: style-conditioned text. Does a style model write in the style it is asked for?

Trains the `gpt-styles` recipe (a character-level GPT on two styles, Tiny Shakespeare and the
pydoc help texts, one control token per style) for --minutes of wall-clock time (the
recipe's short-budget band), then runs `genlab eval`'s style group (genlab.kinds.text):

  - a classifier of character 2-4-grams (TF-IDF + logistic regression, scikit-learn) is
    trained on chunks of the real train text of each style, as many tokens as a passage,
    and scored on chunks of the held-out text (val and test): its accuracy is the ceiling
  - --passages passages per style are generated with that style's control token (temperature
    1, --new-tokens tokens each, seed 0, an empty prompt), and the classifier attributes each
    to a style: the share attributed to the requested style is the model's style accuracy
    (target >= 0.90 for both styles; chance is 0.50)

Also reports the held-out loss (nats per character, every val and test character scored once
after its style token) and the same attribution for the untrained network (what a model
that ignores its style token scores: about the share of passages that happen to look like
one style).

Writes bench/results/style.json and prints a table.

    GENLAB_DATA_DIR=../shared/data python bench/style.py               # ~8 min on 2 cores (5 of training)
    python bench/style.py --minutes 1 --passages 20                     # a quick look
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
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import fresh_run_dir, machine, print_rows, write_result  # noqa: E402
from genlab.artifact import build_model  # noqa: E402
from genlab.kinds.text import style_attribution  # noqa: E402

RECIPE = "gpt-styles"
TARGET = 0.90


def untrained_copy(model):
    """The same network (and tokenizer) with its initial weights: what chance looks like."""
    torch.manual_seed(0)
    fresh = build_model(model.artifact_config)
    fresh.tokenizer, fresh.artifact_config = model.tokenizer, model.artifact_config
    return fresh.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget (default 5)")
    parser.add_argument("--passages", type=int, default=100, help="generated passages per style (default 100)")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens per passage and per real chunk (default 200)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-gpt-styles"))
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. model.n_embd=192")
    args = parser.parse_args()

    out = fresh_run_dir(args.out)
    t0 = time.perf_counter()
    genlab.train(RECIPE, args.overrides, out=out, minutes=args.minutes)
    train_wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    model = genlab.load(out)

    t0 = time.perf_counter()
    style = style_attribution(model, args.passages, seed=0, max_new_tokens=args.new_tokens, progress=False)
    eval_wall = time.perf_counter() - t0
    chance = style_attribution(untrained_copy(model), args.passages, seed=0, max_new_tokens=args.new_tokens,
                               progress=False)
    rates = {name: row["attributed"] for name, row in style["styles"].items()}
    record = {
        "benchmark": "style",
        "recipe": RECIPE,
        "minutes": args.minutes,
        "overrides": args.overrides,
        "budget_band": config.get("budget_band"),
        "data": config["data"],
        "model": config["model"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_steps": metrics["training"]["steps"],
        "train_wall_s": round(train_wall, 1),
        "train_tokens_per_s": metrics["training"].get("tokens_per_s"),
        "test_loss_nats_per_char": round(metrics["test"]["loss"], 4),
        "val_loss_nats_per_char": round(metrics["val"]["loss"], 4),
        "style": style,
        "untrained_style": {k: v for k, v in chance.items() if k != "styles"}
        | {"styles": {name: row["attributed"] for name, row in chance["styles"].items()}},
        "style_eval_wall_s": round(eval_wall, 1),
        "target_attributed": TARGET,
        "meets_target": all(rate >= TARGET for rate in rates.values()),
        "machine": machine(metrics["training"]["device"]),
    }
    path = write_result(record, name="style")

    rows = [(f"attributed: {name}", f"{rate:.3f}",
             f"{args.passages} passages of {args.new_tokens} tokens; untrained {chance['styles'][name]['attributed']:.3f}")
            for name, rate in rates.items()]
    rows += [(f"classifier: {name}", f"{row['held_out_accuracy']:.3f}",
              f"held-out real chunks ({row['held_out_chunks']}), trained on {row['train_chunks']}")
             for name, row in style["styles"].items()]
    rows += [("classifier: all", f"{style['held_out_accuracy']:.3f}", style["classifier"]),
             ("test loss", f"{metrics['test']['loss']:.4f}", "nats/char, after the style token"),
             ("training", f"{train_wall:.0f} s", f"{record['train_steps']} steps, {record['parameters']:,} parameters, "
                                                 f"band {record['budget_band']}"),
             ("meets target", str(record["meets_target"]), f"every style attributed >= {TARGET}")]
    print_rows(rows, width=28)
    for name, row in style["styles"].items():
        print(f"\n--- {name} (generated) ---\n{row['examples'][0]}")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
