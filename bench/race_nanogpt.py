"""Benchmark: genlab against nanoGPT on Tiny Shakespeare at equal wall-clock time (issue 18).

The race, on this machine, one process at a time (never two at once: on a small CPU they
would slow each other down):

  1. nanoGPT (karpathy/nanoGPT at commit 3adf61e, run as a separate process from a scratch
     copy; nothing of it is imported into genlab) runs its README's CPU "baby GPT" command
     unchanged but for max_iters = lr_decay_iters = N and its --out_dir:

         python train.py config/train_shakespeare_char.py --device=cpu --compile=False
             --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
             --n_head=4 --n_embd=128 --max_iters=N --lr_decay_iters=N --dropout=0.0

     Its data are prepared once beforehand by its own prepare.py (not timed), from the same
     checksummed Tiny Shakespeare that genlab reads. Its process wall-clock time W is the
     budget of the race point.
  2. genlab trains gpt-shakespeare-char in a process that must not take longer than W:
     `genlab train gpt-shakespeare-char --minutes M`, with a training budget of W minus genlab's fixed
     overhead minus a 1 s margin. The overhead (interpreter and torch start-up, data
     loading, the step that crosses the budget, the closing evaluation and previews, the
     test-split evaluation and the export) is measured first, by one genlab run with a 3 s
     budget: its process wall time minus 3 s. Both processes' wall times are recorded; if
     genlab's still exceeds nanoGPT's, genlab runs once more with the excess taken off
     its budget (every attempt is recorded).
  3. Both models are scored the same way, by common.nats_per_token: the last 10% of Tiny
     Shakespeare, text[int(0.9 * len(text)):], which is exactly nanoGPT's val split, in
     non-overlapping windows of each model's own block size + 1 characters (consecutive
     windows share one character; the first character of the slice is context only, the
     last, shorter window is scored too), so both score the same characters 1..end of the
     slice, each from at most block_size characters before it; fp32, no gradients; nats per
     character. nanoGPT is scored from the checkpoint its run saved: its shakespeare config
     has always_save_checkpoint=False, so ckpt.pt holds the weights of the last evaluation
     (every 250 iterations, 20 batches) whose val estimate beat the best so far; normally
     iteration N, i.e. after N updates (its loop then takes one more step, not saved). Its
     vocabulary is rebuilt as prepare.py builds it (sorted characters of the whole text),
     not unpickled from meta.pkl. genlab is scored from its exported model directory.

Reported for each race point: nanoGPT's iterations, process wall time, training tokens/s
(12 x 64 tokens per iteration over the mean iteration time, from its "iter N: ... time
X ms" log lines, leaving out the iterations that ran an evaluation, i.e. iteration 0 and
every multiple of eval_interval, whose time includes it; the median-based figure is
recorded too) and score; genlab's training budget, steps, process wall time, training
tokens/s (metrics.json: tokens in training steps over the time inside them; evaluation and
checkpoints excluded) and score; the winner. The issue's targets: genlab below nanoGPT at
every point, and (optional, --long-minutes 18) genlab alone in 18 minutes at <= 1.47
nats/char, nanoGPT's GPU figure.

Writes bench/results/race_nanogpt.json (a --quick run writes runs/race-nanogpt-quick/
race_nanogpt-quick.json instead) and prints a table. Run it alone on the machine:

    flock /tmp/torch.lock .venv/bin/python bench/race_nanogpt.py                      # 2000 and 7500 iterations (~12 min)
    flock /tmp/torch.lock .venv/bin/python bench/race_nanogpt.py --long-minutes 18    # and the 18-minute genlab run
    flock /tmp/torch.lock .venv/bin/python bench/race_nanogpt.py --quick              # the plumbing, in well under a minute
    flock /tmp/torch.lock .venv/bin/python bench/race_nanogpt.py --iters 2000 -- train.lr=0.003   # genlab overrides after --

nanoGPT is looked for in ../shared/peers/nanoGPT (--nanogpt DIR).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import (fresh_run_dir, genlab_last_10_percent_loss, machine, nanogpt_val_text,  # noqa: E402
                    nats_per_token, print_rows, write_result)
from genlab.data.download import data_root  # noqa: E402
from genlab.data.text import load_corpus  # noqa: E402

RECIPE = "gpt-shakespeare-char"
NANOGPT_REPOSITORY = "https://github.com/karpathy/nanoGPT"
NANOGPT_COMMIT = "3adf61e154c3fe3fca428ad6bc3818b27a3b8291"
# nanoGPT's README CPU command, but for max_iters / lr_decay_iters / out_dir (added per run).
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--dropout=0.0"]
NANOGPT_TOKENS_PER_ITER = 12 * 64
NANOGPT_EVAL_INTERVAL = 250  # config/train_shakespeare_char.py
ITER_LINE = re.compile(r"^iter (\d+): loss ([0-9.]+), time ([0-9.]+)ms")
EVAL_LINE = re.compile(r"^step (\d+): train loss ([0-9.]+), val loss ([0-9.]+)")
CALIBRATION_BUDGET_S = 3.0
MARGIN_S = 1.0  # taken off genlab's budget on top of the measured overhead: run-to-run noise
MIN_BUDGET_S = 2.0  # a --quick race point is shorter than genlab's overhead; train this long anyway
TARGET_LONG = 1.47  # nats/char: nanoGPT's GPU baby GPT, the target for the 18-minute run


def timed_process(command: list[str], cwd: Path, log_path: Path) -> float:
    """Run a command to completion, its output in log_path; its wall-clock seconds."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        returncode = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
    if returncode != 0:
        sys.exit(f"{' '.join(command[1:4])} ... failed (exit status {returncode}); its output is in {log_path}")
    return wall


# ----------------------------------------------------------------------------- nanoGPT


def prepare_nanogpt(source: Path, scratch: Path, text: str) -> Path:
    """A fresh scratch copy of nanoGPT with Tiny Shakespeare in place and its prepare.py run."""
    copy = scratch / "nanogpt"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("out*", "*.bin", "*.pkl", "__pycache__"))
    data_dir = copy / "data" / "shakespeare_char"
    (data_dir / "input.txt").write_text(text)  # present, so prepare.py does not download
    subprocess.run([sys.executable, "prepare.py"], cwd=data_dir, check=True, stdout=subprocess.DEVNULL)
    return copy


def run_nanogpt(copy: Path, iters: int, out_dir: Path, log_path: Path, extra: list[str]) -> tuple[float, str]:
    """(process wall seconds, its stdout) of the README command with max_iters = lr_decay_iters = iters."""
    command = [sys.executable, "train.py", *NANOGPT_ARGS, f"--max_iters={iters}", f"--lr_decay_iters={iters}",
               f"--out_dir={out_dir}", *extra]
    return timed_process(command, copy, log_path), log_path.read_text()


def nanogpt_throughput(log: str, eval_interval: int) -> dict:
    """Training tokens/s from the per-iteration lines, without the iterations that ran an evaluation."""
    times = [(int(m[1]), float(m[3])) for m in map(ITER_LINE.match, log.splitlines()) if m]
    kept = [ms for it, ms in times if it % eval_interval != 0]
    evals = [(int(m[1]), float(m[3])) for m in map(EVAL_LINE.match, log.splitlines()) if m]
    return {
        "iterations_logged": len(times),
        "iterations_timed": len(kept),
        "tokens_per_s": round(NANOGPT_TOKENS_PER_ITER * len(kept) / (sum(kept) / 1000), 1),
        "tokens_per_s_median": round(NANOGPT_TOKENS_PER_ITER / (statistics.median(kept) / 1000), 1),
        "last_eval": {"iter": evals[-1][0], "val_loss_20_batches": evals[-1][1]} if evals else None,
    }


def load_nanogpt_module(copy: Path):
    """nanoGPT's model.py from the scratch copy (a benchmark's reference, never genlab code)."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", copy / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def score_nanogpt(module, checkpoint_path: Path, text: str) -> dict:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model = module.GPT(module.GPTConfig(**checkpoint["model_args"]))
    # torch.compile'd runs save their weights under "_orig_mod."; this command does not compile.
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()})
    model.float().eval()
    chars = sorted(set(text))  # prepare.py's vocabulary
    if len(chars) != checkpoint["model_args"]["vocab_size"]:
        sys.exit(f"nanoGPT's checkpoint has {checkpoint['model_args']['vocab_size']} tokens, the text {len(chars)} characters")
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in nanogpt_val_text(text)])

    def token_log_likelihoods(x: torch.Tensor) -> torch.Tensor:
        targets = x[:, 1:].contiguous()  # its forward .view()s them
        logits, _ = model(x[:, :-1], targets)  # with targets its forward returns every position's logits
        return -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")

    block_size = checkpoint["model_args"]["block_size"]
    loss, scored = nats_per_token(token_log_likelihoods, ids, block_size)
    return {"nats_per_char": round(loss, 4), "chars_scored": scored, "block_size": block_size,
            "checkpoint_iter": checkpoint["iter_num"], "checkpoint_val_estimate": round(float(checkpoint["best_val_loss"]), 4),
            "parameters": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- genlab


def run_genlab(budget_s: float, out: Path, log_path: Path, overrides: list[str]) -> dict:
    """Train in a separate process (as a user would: `genlab train RECIPE --minutes M`); its wall time and the run's own records."""
    fresh_run_dir(out)
    command = [sys.executable, "-m", "genlab", "train", RECIPE, *overrides, "--minutes", f"{budget_s / 60:.4f}", "--out", str(out)]
    wall = timed_process(command, REPO, log_path)
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    training = metrics["training"]
    return {
        "budget_s": round(budget_s, 2),
        "process_wall_s": round(wall, 2),
        "overhead_s": round(wall - budget_s, 2),  # everything in the process but the budgeted training loop
        "steps": training["steps"],
        "loop_wall_s": training["wall_time_s"],
        "train_time_s": training["train_time_s"],
        "tokens_per_s": training.get("tokens_per_s"),
        "batch_size": config["train"]["batch_size"],
        "block_size": config["data"]["block_size"],
        "model": {k: config["model"][k] for k in ("n_layer", "n_head", "n_embd") if k in config["model"]},
        "command": " ".join(command[1:]),
        "out": str(out),
    }


def score_genlab(out: Path, text: str) -> dict:
    model = genlab.load(out)
    loss, scored = genlab_last_10_percent_loss(model, text)
    return {"nats_per_char": round(loss, 4), "chars_scored": scored, "block_size": model.config.block_size,
            "parameters": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- the race


def fresh_scratch(scratch: Path) -> None:
    """Recreate the scratch folder; delete only one this script made (it holds a marker file)."""
    marker = scratch / ".race-nanogpt"
    if scratch.exists():
        if not marker.is_file():
            sys.exit(f"{scratch} exists and was not made by this benchmark; move it away or choose another --scratch")
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    marker.write_text("scratch folder of bench/race_nanogpt.py; deleted and recreated on every run\n")


def race_point(iters: int, copy: Path, scratch: Path, text: str, module, overhead_s: float, args) -> dict:
    eval_interval = iters if args.quick else NANOGPT_EVAL_INTERVAL
    # A --quick run is shorter than one evaluation interval: evaluate (and so save) at its end.
    extra = [f"--eval_interval={iters}"] if args.quick else []
    print(f"\n[{iters} iterations] nanoGPT ...", flush=True)
    nano_out = scratch / f"nanogpt-out-{iters}"
    nano_wall, nano_log = run_nanogpt(copy, iters, nano_out, scratch / f"nanogpt-{iters}.log", extra)
    nano = {"iters": iters, "process_wall_s": round(nano_wall, 2), **nanogpt_throughput(nano_log, eval_interval),
            **score_nanogpt(module, nano_out / "ckpt.pt", text),
            "command": " ".join(["train.py", *NANOGPT_ARGS, f"--max_iters={iters}", f"--lr_decay_iters={iters}", *extra])}
    print(f"  {nano_wall:.1f} s, {nano['tokens_per_s']:.0f} tokens/s, {nano['nats_per_char']:.4f} nats/char", flush=True)

    attempts = []
    budget = max(nano_wall - overhead_s - MARGIN_S, MIN_BUDGET_S)
    for attempt in range(2):
        print(f"[{iters} iterations] genlab, budget {budget:.1f} s ...", flush=True)
        run = run_genlab(budget, scratch / f"genlab-{iters}", scratch / f"genlab-{iters}-{attempt}.log",
                         args.genlab_overrides)
        attempts.append(run)
        excess = run["process_wall_s"] - nano_wall
        if excess <= 0 or budget <= MIN_BUDGET_S:
            break
        budget = max(budget - excess - MARGIN_S, MIN_BUDGET_S)  # over nanoGPT's time: once more, shorter
    gen = {**attempts[-1], **score_genlab(scratch / f"genlab-{iters}", text)}
    print(f"  {gen['process_wall_s']:.1f} s, {gen['steps']} steps, {gen['nats_per_char']:.4f} nats/char", flush=True)
    winner = "genlab" if gen["nats_per_char"] < nano["nats_per_char"] else (
        "nanoGPT" if nano["nats_per_char"] < gen["nats_per_char"] else "tie")
    return {
        "nanogpt": nano,
        "genlab": gen,
        "genlab_attempts": [{k: a[k] for k in ("budget_s", "process_wall_s", "steps")} for a in attempts],
        "equal_time_held": gen["process_wall_s"] <= nano["process_wall_s"],
        "genlab_below_nanogpt": gen["nats_per_char"] < nano["nats_per_char"],
        "winner": winner,
        "margin_nats_per_char": round(nano["nats_per_char"] - gen["nats_per_char"], 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, default=REPO.parent / "shared" / "peers" / "nanoGPT",
                        help="a checkout of karpathy/nanoGPT (read only; copied to the scratch folder)")
    parser.add_argument("--iters", default=None, help="nanoGPT iteration counts of the race points (default 2000,7500)")
    parser.add_argument("--long-minutes", type=float, default=0.0,
                        help="also train genlab alone for this many minutes (target <= 1.47 nats/char); 0: no")
    parser.add_argument("--quick", action="store_true", help="30 iterations and tiny budgets: check the plumbing")
    parser.add_argument("--scratch", type=Path, default=None, help="scratch folder (default runs/race-nanogpt[-quick])")
    parser.add_argument("genlab_overrides", nargs="*", help="genlab recipe overrides (after --), e.g. train.lr=0.003")
    args = parser.parse_args()

    if not (args.nanogpt / "train.py").is_file():
        sys.exit(f"nanoGPT not found in {args.nanogpt}: git clone {NANOGPT_REPOSITORY} there and check out "
                 f"{NANOGPT_COMMIT} (or pass --nanogpt DIR)")
    iters = [int(n) for n in (args.iters or ("30" if args.quick else "2000,7500")).split(",")]
    for n in iters:
        if not args.quick and n % NANOGPT_EVAL_INTERVAL:
            print(f"note: {n} is not a multiple of nanoGPT's eval_interval {NANOGPT_EVAL_INTERVAL}: its last "
                  f"checkpoint will be from iteration {n - n % NANOGPT_EVAL_INTERVAL} or earlier")
    scratch = args.scratch or REPO / "runs" / ("race-nanogpt-quick" if args.quick else "race-nanogpt")
    fresh_scratch(scratch)

    text = load_corpus("tinyshakespeare", data_root())  # checksummed; the same text for both
    copy = prepare_nanogpt(args.nanogpt, scratch, text)
    module = load_nanogpt_module(copy)

    print(f"measuring genlab's fixed overhead ({CALIBRATION_BUDGET_S:.0f} s budget) ...", flush=True)
    calibration = run_genlab(CALIBRATION_BUDGET_S, scratch / "genlab-overhead", scratch / "genlab-overhead.log",
                             args.genlab_overrides)
    overhead_s = calibration["overhead_s"]
    print(f"  overhead {overhead_s:.1f} s ({calibration['process_wall_s']:.1f} s process)", flush=True)

    points = [race_point(n, copy, scratch, text, module, overhead_s, args) for n in iters]

    long_run = None
    if args.long_minutes > 0:
        print(f"\ngenlab alone, {args.long_minutes:g} minutes ...", flush=True)
        out = scratch / "genlab-long"
        long_run = {**run_genlab(args.long_minutes * 60, out, scratch / "genlab-long.log", args.genlab_overrides),
                    **score_genlab(out, text)}
        long_run["target_nats_per_char"] = TARGET_LONG
        long_run["meets_target"] = long_run["nats_per_char"] <= TARGET_LONG

    record = {
        "benchmark": "race_nanogpt",
        "quick": args.quick,
        "recipe": RECIPE,
        "genlab_overrides": args.genlab_overrides,
        "genlab_budget_option": "--minutes",
        "nanogpt": {"repository": NANOGPT_REPOSITORY, "commit": NANOGPT_COMMIT, "source": str(args.nanogpt)},
        "scoring": "nats/char on text[int(0.9*len(text)):] of Tiny Shakespeare (nanoGPT's val split), characters "
                   "1..end each scored once from non-overlapping windows of each model's block_size + 1, fp32",
        "genlab_overhead_s": overhead_s,
        "genlab_overhead_calibration": {k: calibration[k] for k in ("budget_s", "process_wall_s", "loop_wall_s", "steps")},
        "budget_rule": f"genlab budget = nanoGPT process wall - genlab overhead - {MARGIN_S:g} s "
                       f"(at least {MIN_BUDGET_S:g} s); rerun once if its process was still longer",
        "points": points,
        "target_genlab_below_nanogpt_everywhere": all(p["genlab_below_nanogpt"] for p in points),
        "long_run": long_run,
        "machine": machine("cpu"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genlab_version": genlab.__version__,
    }
    if args.quick:
        path = write_result(record, path=scratch / "race_nanogpt-quick.json")
    else:
        path = write_result(record, name="race_nanogpt")

    rows = [("genlab overhead", f"{overhead_s:.1f} s", "process wall - training budget, from a 3 s run")]
    for p in points:
        n, g = p["nanogpt"], p["genlab"]
        tag = f"{n['iters']} it"
        rows += [
            (f"{tag} nanoGPT", f"{n['nats_per_char']:.4f}",
             f"{n['process_wall_s']:.1f} s process, {n['tokens_per_s']:.0f} tok/s, checkpoint of iter {n['checkpoint_iter']}"),
            (f"{tag} genlab", f"{g['nats_per_char']:.4f}",
             f"{g['process_wall_s']:.1f} s process, budget {g['budget_s']:.1f} s, {g['steps']} steps, "
             f"{g['tokens_per_s'] or 0:.0f} tok/s"),
            (f"{tag} winner", p["winner"], f"by {abs(p['margin_nats_per_char']):.4f} nats/char; "
             f"equal time held: {p['equal_time_held']}"),
        ]
    if long_run is not None:
        rows.append((f"genlab {args.long_minutes:g} min", f"{long_run['nats_per_char']:.4f}",
                     f"target <= {TARGET_LONG}: {long_run['meets_target']}; {long_run['steps']} steps, "
                     f"{long_run['process_wall_s']:.0f} s process"))
    print_rows(rows, width=20)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
