"""What the benchmarks share: the machine they ran on, where their JSON goes, their table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine(device: str) -> dict:
    """The facts a reader needs to compare a figure with their own: cores, threads, versions."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": device}


def matmul_gflops(seconds: float = 2.0, size: int = 1024, dtype: torch.dtype = torch.float32) -> float:
    """Matrix-multiply throughput now (fp32 unless `dtype`), in GFLOP/s: a probe of the machine's speed.

    A wall-clock benchmark's figures move with the machine (a shared host can be a third slower one hour than
    the next); recording this beside them says which runs can be compared."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return round(2 * size**3 * count / (time.perf_counter() - started) / 1e9, 1)


def fresh_run_dir(out: Path | str) -> Path:
    """Clear a previous run of this benchmark from `out`; refuse to delete anything that is not a genlab run."""
    out = Path(out)
    if out.exists():
        if not (out / "config.json").is_file():
            sys.exit(f"{out} exists and is not a genlab run; choose another --out")
        shutil.rmtree(out)
    return out


def write_result(record: dict, path: Path | str | None = None, name: str | None = None,
                 keep_history: bool = False) -> Path:
    """Write a benchmark record as JSON (bench/results/NAME.json unless `path` is given).

    keep_history: the records the file held before move into the new one's "history" list (oldest first),
    so a figure quoted from an earlier run keeps its source."""
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    if keep_history and path.is_file():
        previous = json.loads(path.read_text())
        record = {**record, "history": previous.pop("history", []) + [previous]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def plain_metric_names(metrics: dict, space: str) -> dict:
    """genlab's sample metrics without their feature-space suffix: "fd[lenet-mnist]" -> "fd"."""
    return {name.replace(f"[{space}]", ""): value for name, value in metrics.items()}


def print_rows(rows: list[tuple[str, str, str]], width: int = 24) -> None:
    """A metric | value | note table on stdout."""
    print(f"\n{'metric':<{width}}{'value':>12}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}{value:>12}  {note}")


def nanogpt_val_text(text: str) -> str:
    """The last 10% of a text: exactly nanoGPT's shakespeare_char validation split (its prepare.py)."""
    return text[int(len(text) * 0.9):]


@torch.no_grad()
def nats_per_token(token_log_likelihoods, ids, block_size: int, batch_size: int = 32) -> tuple[float, int]:
    """(mean nats per token, tokens scored) over every token of `ids` but the first, each scored once.

    Windows of block_size + 1 tokens start at 0, block_size, 2 * block_size, ... (consecutive
    windows share one token: the last target of one is the first input of the next), so each
    token is predicted from the tokens before it in its window, never from more than
    block_size of them. A last window shorter than block_size + 1 is scored too, so the
    tokens scored are exactly ids[1:] for any block size. `token_log_likelihoods` maps int64
    windows [B, T] to log p(x_t | x_<t) for t = 2..T, [B, T - 1] (a genlab autoregressive
    model's method of that name, or an adapter around another model).
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    targets = len(ids) - 1
    full = targets // block_size
    offsets = torch.arange(block_size + 1)
    total, count = 0.0, 0
    for first in range(0, full, batch_size):
        starts = torch.arange(first, min(first + batch_size, full)) * block_size
        log_p = token_log_likelihoods(ids[starts[:, None] + offsets])
        total -= log_p.double().sum().item()
        count += log_p.numel()
    if full * block_size < targets:  # the shorter last window
        log_p = token_log_likelihoods(ids[full * block_size:][None])
        total -= log_p.double().sum().item()
        count += log_p.numel()
    return total / count, count


def genlab_last_10_percent_loss(model, text: str) -> tuple[float, int]:
    """(nats per character, characters scored) of a genlab character model on the last 10% of `text`
    (nanoGPT's validation split), in windows of the model's own context (nats_per_token)."""
    ids = model.tokenizer.encode(nanogpt_val_text(text))
    return nats_per_token(lambda x: model.token_log_likelihoods(x.to(model.device)), ids, model.config.block_size)
