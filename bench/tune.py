"""Benchmark: does hyper-parameter search pay? `genlab tune` on lstm-jsb, TPE + median pruning
against random search without pruning, at the same wall budget, against the recipe's defaults.

lstm-jsb (an LSTM over JSB Chorales piano-roll frames, 88 independent sigmoid outputs) was set
by hand for 54 epochs; here every run is shorter so that several trials fit the budget: the
fixed overrides FIXED (epochs=E, default 12; keep the weights of the best validation NLL) apply
to the default run and to every trial alike. The objective is val.nll_per_frame (nats per frame,
JSB's validation split); the test split is never looked at during the search.

    default      the recipe's own settings with FIXED: one run, its val and test NLL
    tpe+median   genlab tune --sampler tpe --pruner median --budget-min B --workers W
    random       genlab tune --sampler random --pruner none --budget-min B --workers W

Per study: trials run, pruned and failed, the best validation NLL, and the wall time (from the
study's start) at which a finished trial first reached the default's validation NLL. Then each
study's best-recipe.yaml is trained again with `genlab train` (a fresh process, the trial's thread
count): its validation NLL must equal the trial's exactly, and its TEST NLL is the held-out score.
Writes bench/results/tune.json and prints a table.

    GENLAB_DATA_DIR=../shared/data python bench/tune.py                        # 2 x 7 min studies, ~17 min in all
    python bench/tune.py --budget-min 1 --epochs 2                             # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

import genlab  # noqa: E402
from common import machine, write_result  # noqa: E402
from genlab.tuning import TuneOptions, tune  # noqa: E402

RECIPE = "lstm-jsb"
OBJECTIVE = "val.nll_per_frame"
SPACE = [  # the recipe's values: lr 0.002, hidden_size 512, dropout 0.6, input_dropout 0.1, weight_decay 0.01
    "train.lr=logfloat:3e-4:1e-2",
    "model.hidden_size=int:64:512:64",
    "model.dropout=float:0.0:0.7",
    "model.input_dropout=float:0.0:0.4",
    "train.weight_decay=logfloat:1e-4:1e-1",
]
STUDIES = {"tpe+median": ("tpe", "median"), "random": ("random", "none")}


def fixed_overrides(epochs: int) -> list[str]:
    return [f"train.epochs={epochs}", "train.keep_best=true", f"train.monitor={OBJECTIVE}", "train.tensorboard=false",
            "train.progress=false"]


def genlab_train(recipe: str, overrides: list[str], out: Path, threads: int) -> dict:
    """`genlab train` in a fresh process with `threads` torch threads; its metrics.json."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "genlab", "train", recipe, *overrides, "--out", str(out)],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"genlab train {recipe} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_s"] = round(time.perf_counter() - start, 1)
    return metrics


def run_study(label: str, sampler: str, pruner: str, args, default_val: float) -> dict:
    name = f"bench-{label.replace('+', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(args.out) / name
    started = datetime.datetime.now()
    options = TuneOptions(budget_min=args.budget_min, sampler=sampler, pruner=pruner, seed=args.seed,
                          workers=args.workers, study=name, out=out)
    print(f"\nstudy {label}: {sampler} sampler, pruner {pruner}, {args.budget_min:g} min, {args.workers} worker(s)",
          file=sys.stderr)
    summary = tune(RECIPE, fixed_overrides(args.epochs), search=SPACE, objective=OBJECTIVE, options=options)
    complete = sorted((t for t in summary["trials"] if t["state"] == "complete"),
                      key=lambda t: datetime.datetime.fromisoformat(t["started"]) + datetime.timedelta(seconds=t["seconds"]))
    reached = next((t for t in complete if t["value"] <= default_val), None)
    end_of = lambda t: (datetime.datetime.fromisoformat(t["started"]) - started).total_seconds() + t["seconds"]  # noqa: E731
    counts = summary["counts"]
    record = {"sampler": sampler, "pruner": pruner, "study": name, "study_dir": str(out),
              "trials": sum(counts.values()), "complete": counts.get("complete", 0), "pruned": counts.get("pruned", 0),
              "failed": counts.get("fail", 0), "wall_s": summary["run_wall_s"],
              "best": summary["best"], "reached_default_at_s": round(end_of(reached), 1) if reached else None,
              "reached_default_by_trial": reached["number"] if reached else None,
              "trials_detail": [{k: t[k] for k in ("number", "state", "value", "params", "steps", "seconds")}
                                for t in summary["trials"]]}
    if summary["best"] is not None:
        retrained = genlab_train(summary["best_recipe"], [], out / "retrained", args.threads_per_trial)
        trial_val = json.loads((Path(summary["best"]["run_dir"]) / "metrics.json").read_text())["val"]
        record["retrained"] = {"val": retrained["val"], "test": retrained["test"], "wall_s": retrained["wall_s"],
                               "val_equals_trial": retrained["val"] == trial_val}
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=7.0, help="wall budget of each study, minutes")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of every run (the recipe's own is 54)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per study (threads split between them)")
    parser.add_argument("--seed", type=int, default=0, help="the samplers' seed")
    parser.add_argument("--studies", nargs="+", choices=list(STUDIES), default=list(STUDIES))
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-tune"), help="folder for the runs and studies")
    parser.add_argument("--result", default=None, help="JSON path (default bench/results/tune.json)")
    args = parser.parse_args()
    args.threads_per_trial = max(1, torch.get_num_threads() // args.workers)
    Path(args.out).mkdir(parents=True, exist_ok=True)

    print(f"default: {RECIPE} with {' '.join(fixed_overrides(args.epochs))}", file=sys.stderr)
    default = genlab_train(RECIPE, fixed_overrides(args.epochs), Path(args.out) / f"default-{time.strftime('%Y%m%d-%H%M%S')}",
                           args.threads_per_trial)
    default_val = default["val"]["nll_per_frame"]
    studies = {label: run_study(label, *STUDIES[label], args, default_val) for label in args.studies}
    record = {
        "benchmark": "tune",
        "recipe": RECIPE, "objective": OBJECTIVE, "direction": "minimize",
        "data": "JSB Chorales, quarter notes (229/76/77 pieces); val NLL during the search, test NLL only after it",
        "fixed_overrides": fixed_overrides(args.epochs), "space": SPACE,
        "budget_min_per_study": args.budget_min, "workers": args.workers, "threads_per_trial": args.threads_per_trial,
        "default": {"val": default["val"], "test": default["test"], "wall_s": default["wall_s"]},
        "studies": studies,
        "machine": machine("cpu"), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "genlab_version": genlab.__version__,
    }
    path = write_result(record, args.result, name="tune")
    print_table(record)
    print(f"written to {path}")
    return 0


def print_table(record: dict) -> None:
    default, studies = record["default"], record["studies"]
    columns = ["default", *studies]
    print(f"\n{RECIPE}, {record['fixed_overrides'][0]}, {record['budget_min_per_study']:g} min per study, "
          f"{record['workers']} worker(s) x {record['threads_per_trial']} thread(s); NLL in nats per frame")
    print(f"{'':<30}" + "".join(f"{c:>14}" for c in columns))

    def row(name, default_cell, cell):
        print(f"{name:<30}{default_cell:>14}" + "".join(f"{cell(s):>14}" for s in studies.values()))

    row("trials run", "1", lambda s: str(s["trials"]))
    row("trials pruned", "-", lambda s: str(s["pruned"]))
    row("trials failed", "-", lambda s: str(s["failed"]))
    row("best val NLL", f"{default['val']['nll_per_frame']:.4f}",
        lambda s: f"{s['best']['value']:.4f}" if s["best"] else "-")
    row("reached default's val at", "-",
        lambda s: f"{s['reached_default_at_s']:.0f} s" if s["reached_default_at_s"] is not None else "never")
    row("study wall time", f"{default['wall_s']:.0f} s", lambda s: f"{s['wall_s']:.0f} s")
    row("test NLL (best recipe)", f"{default['test']['nll_per_frame']:.4f}",
        lambda s: f"{s['retrained']['test']['nll_per_frame']:.4f}" if "retrained" in s else "-")
    row("retrained val == trial's", "-",
        lambda s: ("yes" if s["retrained"]["val_equals_trial"] else "NO") if "retrained" in s else "-")
    for label, study in studies.items():
        if study["best"]:
            params = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in study["best"]["params"].items())
            print(f"best of {label}: trial {study['best']['number']}  {params}")


if __name__ == "__main__":
    sys.exit(main())
