"""Benchmark: frame-level NLL on JSB Chorales (quarter notes), independent vs NADE output.

Trains two recipes on the Boulanger-Lewandowski train split (229 chorales) under a
wall-clock budget each, validating on the valid split (76) after every epoch and keeping
the weights with the lowest validation NLL (early stopping: training ends once validation
has not improved for --patience epochs, or when the budget is spent), then scores the test
split (77) with those weights:

    lstm-jsb       LSTM over frames, 88 independent sigmoid outputs (as Bai et al. 2018)
    rnn-nade-jsb   LSTM over frames, NADE output: exact within-frame autoregressive
                   likelihood (as RNN-NADE, Boulanger-Lewandowski et al. 2012)

Frame-level NLL: per frame, -log p(the frame's 88-key binary vector | the frames before it)
in nats, averaged over all test frames (every frame once; not a mean of per-piece means).
Two counts are reported: every frame of every piece (the model's full likelihood, the first
frame predicted from the start flag alone), and every frame but each piece's first, which is
what locuslab/TCN's poly_music scores (it predicts frames 2..T). Published figures on this
split: LSTM 8.45, GRU 8.43, TCN 8.10 (Bai et al. 2018, independent sigmoids); RNN-NADE 5.56
(Boulanger-Lewandowski et al. 2012). Targets: <= 8.40 independent, <= 7.0 NADE.

Each trained model is a normal model directory (genlab.load, genlab compose) under --out.
Writes bench/results/music_jsb.json and prints a table.

    GENLAB_DATA_DIR=../shared/data python bench/music_jsb.py                 # the full run (at most 20 min)
    python bench/music_jsb.py --budget-min 1 --heads independent             # a quick look
    python bench/music_jsb.py --budget-min 2 model.hidden_size=128 data.transpose=2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "bench"))

import genlab  # noqa: E402
from common import fresh_run_dir, machine, write_result  # noqa: E402
from genlab.api import _model_config  # noqa: E402
from genlab.artifact import save, write_config, write_metrics  # noqa: E402
from genlab.config import TrainConfig, apply_overrides, from_dict, load_recipe, to_dict  # noqa: E402
from genlab.data.jsb import PianoRollDataSpec, load_pianoroll_data  # noqa: E402
from genlab.registry import get_family  # noqa: E402
from genlab.training import Trainer  # noqa: E402

RECIPES = {"independent": "lstm-jsb", "nade": "rnn-nade-jsb"}
PUBLISHED = [  # (model, test frame NLL in nats, output, source)
    ("LSTM", 8.45, "independent", "Bai et al. 2018"),
    ("GRU", 8.43, "independent", "Bai et al. 2018"),
    ("TCN", 8.10, "independent", "Bai et al. 2018"),
    ("RNN-NADE", 5.56, "nade", "Boulanger-Lewandowski et al. 2012"),
]
TARGETS = {"independent": 8.40, "nade": 7.0}


def train_head(head: str, overrides: list[str], out: Path, budget_s: float, patience: int) -> dict:
    recipe = RECIPES[head]
    # Epochs are left open: the budget and early stopping end the run, not the recipe's fixed length.
    # The Trainer keeps the weights of the best validation NLL (best.safetensors) and exports them.
    settings = ["train.epochs=10000", f"train.time_budget_s={budget_s}", "train.progress=false", "train.tensorboard=false",
                f"train.early_stopping_patience={patience}", "train.keep_best=true", "train.monitor=val.nll_per_frame"]
    resolved = apply_overrides(load_recipe(recipe), [*settings, *overrides])
    family_cls = get_family(resolved["family"])
    train_cfg = from_dict(TrainConfig, resolved["train"], "train")
    data_spec = from_dict(PianoRollDataSpec, resolved["data"], "data")
    data = load_pianoroll_data(data_spec)
    if train_cfg.eval_every is None:  # patience counts evaluations: make it epochs, one validation each
        train_cfg = dataclasses.replace(train_cfg, eval_every=data.num_examples("train") // train_cfg.batch_size)
    model_cfg = _model_config(family_cls, resolved["model"], data)
    torch.manual_seed(train_cfg.seed)
    model = family_cls(model_cfg)
    fresh_run_dir(out)
    out.mkdir(parents=True)
    write_config(out, {"family": resolved["family"], "recipe": recipe, "description": resolved.get("description", ""),
                       "model": to_dict(model_cfg), "data": to_dict(data_spec), "train": to_dict(train_cfg),
                       "classes": []})

    trainer = Trainer(model, data, train_cfg, out)
    start = time.perf_counter()
    result = trainer.fit()  # ends with the best weights in the model
    wall = time.perf_counter() - start
    val = trainer.evaluate("val")
    test = trainer.evaluate("test")
    trainer.close()
    save(model, out)  # the weights; config.json is written above
    for name in ("checkpoint.safetensors", "best.safetensors"):  # the model directory holds the best weights
        (out / name).unlink(missing_ok=True)
    record = {
        "recipe": recipe,
        "device": str(trainer.device),
        "overrides": overrides,
        "model": to_dict(model_cfg),
        "data": to_dict(data_spec),
        "train": to_dict(train_cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": result.steps,
        "epochs": round(result.steps / trainer.steps_per_epoch, 1),
        "best_step": result.best_step,
        "best_epoch": round(result.best_step / trainer.steps_per_epoch, 1),
        "stopped_by": "early stopping" if result.status == "early_stopped" else "time budget or epochs",
        "train_wall_s": round(wall, 1),
        "val": {k: round(v, 4) for k, v in val.items()},
        "test": {k: round(v, 4) for k, v in test.items()},
        "test_frames": data.test.num_frames,
        "test_pieces": len(data.test),
        "model_dir": str(out),
    }
    write_metrics(out, {"genlab_version": genlab.__version__, "val": val, "test": test, "data": data_spec.name,
                        "seed": train_cfg.seed, "training": {"steps": result.steps, "best_step": result.best_step,
                                                             "wall_time_s": round(wall, 2)}})
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=10.0, help="training wall-clock cap per head, minutes")
    parser.add_argument("--heads", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--patience", type=int, default=25, help="epochs without a validation improvement before stopping")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-music-jsb"), help="folder for the model directories")
    parser.add_argument("--result", default=None, help="JSON path (default bench/results/music_jsb.json)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every head, e.g. model.hidden_size=128")
    args = parser.parse_args()

    heads = {}
    for head in args.heads:
        print(f"training {RECIPES[head]} ({head} output), budget {args.budget_min:g} min", file=sys.stderr)
        heads[head] = train_head(head, list(args.overrides), Path(args.out) / RECIPES[head], args.budget_min * 60,
                                 args.patience)
        heads[head]["target"] = TARGETS[head]
        heads[head]["meets_target"] = heads[head]["test"]["nll_per_frame"] <= TARGETS[head]
    record = {
        "benchmark": "music_jsb",
        "data": "JSB Chorales, quarter notes, Boulanger-Lewandowski 2012 split (229/76/77), 88 keys MIDI 21-108",
        "metric": "test frame-level NLL, nats per frame, averaged over all test frames",
        "budget_min_per_head": args.budget_min,
        "patience_epochs": args.patience,
        "heads": heads,
        "published": [{"model": m, "test_nll_per_frame": v, "output": o, "source": s} for m, v, o, s in PUBLISHED],
        "machine": machine(next(iter(heads.values()))["device"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genlab_version": genlab.__version__,
    }
    path = write_result(record, args.result, name="music_jsb")

    print(f"\n{'model':<34}{'test NLL':>10}{'w/o 1st':>10}{'val NLL':>10}  note")
    for head, row in heads.items():
        verdict = "meets" if row["meets_target"] else "misses"
        print(f"{'genlab ' + row['recipe'] + ' (' + head + ')':<34}{row['test']['nll_per_frame']:>10.3f}"
              f"{row['test']['nll_per_frame_after_first']:>10.3f}{row['val']['nll_per_frame']:>10.3f}  "
              f"{verdict} target <= {row['target']}; best epoch {row['best_epoch']:g} of {row['epochs']:g}, "
              f"{row['train_wall_s']:.0f} s, {row['parameters'] / 1e3:.0f}k parameters")
    for name, value, output, source in PUBLISHED:
        print(f"{name + ' (' + output + ')':<34}{value:>10.2f}{'':>10}{'':>10}  published, {source}")
    print("\ntest NLL: every test frame; w/o 1st: each piece's first frame left out, as locuslab/TCN poly_music scores")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
