"""Sweep: which settings train the best model in a given number of minutes (a recipe's budget bands).

For one recipe and one or more budgets, trains every candidate (a named list of overrides) with
`genlab train RECIPE --minutes M` — the budget-aware schedule, no step count — one after the
other on this machine, and records each one's validation and test metrics. The bands a recipe
declares (`budgets:` in its YAML, shown by `genlab recipes`) are the winners of these sweeps.

    GENLAB_DATA_DIR=../shared/data python bench/budget_bands.py gpt-shakespeare-char --minutes 1.25 \\
        --candidate "nano: data.block_size=64 model.n_embd=128 batch_size=12 lr=0.001" \\
        --candidate "wide: data.block_size=64 model.n_embd=128 batch_size=32 lr=0.002"

Each candidate's overrides go on top of the recipe's band for that budget, so a candidate names
only what it changes (write the band's settings out in full to compare against a band).
`--objective` picks the metric that ranks them (default val.loss, lower is better; `last10`:
for Tiny Shakespeare recipes, nats per character on the last 10% of the text, nanoGPT's
validation split, scored as bench/race_nanogpt.py does; `samples.fd` (or any other sample metric:
samples.kd, samples.precision, ...): image recipes, the metric of `-n` samples against the test split
in the data's feature space, as `genlab evaluate` computes it; fd and kd rank lower-is-better, the
others are reported as measured). Results accumulate in
bench/results/budget_bands-RECIPE.json (one entry per budget and candidate, newest wins), each with
the machine's fp32 matmul GFLOP/s just before and after its run: on a shared host the same run can
take a third more time one hour than another, and only runs at about the same speed compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import (RESULTS, fresh_run_dir, genlab_last_10_percent_loss, machine, matmul_gflops,  # noqa: E402
                    plain_metric_names, write_result)


def last_10_percent_loss(run_dir: Path) -> float:
    """Nats per character on the last 10% of the training corpus, every character once, as bench/race_nanogpt.py scores."""
    from genlab.data import data_root
    from genlab.data.text import load_corpus

    config = json.loads((run_dir / "config.json").read_text())
    return genlab_last_10_percent_loss(genlab.load(run_dir), load_corpus(config["data"]["name"], data_root()))[0]


def sample_metrics(run_dir: Path, n: int) -> dict:
    """FD, KD, precision, recall, ... of n samples against the test split, as `genlab evaluate` computes them."""
    from genlab.evaluation import evaluate

    result = evaluate(run_dir, n=n, metrics=("samples",), progress=False)["samples"]
    return {"n": n, "feature_space": result["feature_space"],
            **plain_metric_names(result["metrics"], result["feature_space"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--minutes", type=float, action="append", required=True, help="a budget (repeatable)")
    parser.add_argument("--candidate", action="append", required=True, metavar="'NAME: key=value ...'",
                        help="a named set of overrides (repeatable); 'NAME:' alone runs the band as it is")
    parser.add_argument("--objective", default="val.loss",
                        help="val.KEY | test.KEY | last10 | samples.KEY (default val.loss)")
    parser.add_argument("-n", type=int, default=10_000, help="samples for a samples.KEY objective (default 10,000)")
    parser.add_argument("--out", default=str(REPO / "runs" / "budget-bands"))
    args = parser.parse_args()

    results_path = RESULTS / f"budget_bands-{args.recipe}.json"
    record = json.loads(results_path.read_text()) if results_path.is_file() else {"recipe": args.recipe, "runs": {}}
    rows = []
    for minutes in args.minutes:
        for candidate in args.candidate:
            name, _, settings = candidate.partition(":")
            overrides = shlex.split(settings)
            out = fresh_run_dir(Path(args.out) / f"{args.recipe}-{minutes:g}min-{name.strip()}")
            probe_before = matmul_gflops()
            started = time.perf_counter()
            genlab.train(args.recipe, [*overrides, "train.progress=false"], out=out, minutes=minutes)
            wall = time.perf_counter() - started
            probe = [probe_before, matmul_gflops()]  # the machine's speed just before and just after the run
            metrics = json.loads((out / "metrics.json").read_text())
            entry = {"minutes": minutes, "candidate": name.strip(), "overrides": overrides,
                     "band": json.loads((out / "config.json").read_text()).get("budget_band"),
                     "val": metrics["val"], "test": metrics["test"], "steps": metrics["training"]["steps"],
                     "examples_per_s": metrics["training"]["examples_per_s"], "process_wall_s": round(wall, 1),
                     "matmul_gflops_before_after": probe}
            if args.objective == "last10":
                entry["last10"] = round(last_10_percent_loss(out), 4)
                score = entry["last10"]
            elif args.objective.startswith("samples."):
                entry["samples"] = sample_metrics(out, args.n)
                score = entry["samples"][args.objective.partition(".")[2]]
            else:
                section, _, key = args.objective.partition(".")
                score = entry[section][key]
            entry["objective"], entry["score"] = args.objective, score
            record["runs"][f"{minutes:g}min/{name.strip()}"] = entry
            record.update(machine=machine("cpu"), date=time.strftime("%Y-%m-%d %H:%M:%S"), genlab_version=genlab.__version__)
            write_result(record, results_path)  # after every run: a long sweep keeps what it measured
            rows.append((f"{minutes:g}", name.strip(), entry["steps"], score, probe))
            print(f"{minutes:g} min  {name.strip():<16} steps {entry['steps']:>6}  {args.objective} {score:.4f}  "
                  f"(matmul {probe[0]} / {probe[1]} GFLOP/s before / after)", flush=True)

    print(f"\n{'minutes':>8}  {'candidate':<16}{'steps':>8}  {args.objective:<10}  matmul GFLOP/s before, after")
    for minutes, name, steps, score, probe in rows:
        print(f"{minutes:>8}  {name:<16}{steps:>8}  {score:<10.4f}  {probe[0]}, {probe[1]}")
    print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
