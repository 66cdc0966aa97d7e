"""What the benchmarks share: the machine they ran on, where their JSON goes, their table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine(device: str) -> dict:
    """The facts a reader needs to compare a figure with their own: cores, threads, versions."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": device}


def fresh_run_dir(out: Path | str) -> Path:
    """Clear a previous run of this benchmark from `out`; refuse to delete anything that is not a genlab run."""
    out = Path(out)
    if out.exists():
        if not (out / "config.json").is_file():
            sys.exit(f"{out} exists and is not a genlab run; choose another --out")
        shutil.rmtree(out)
    return out


def write_result(record: dict, path: Path | str | None = None, name: str | None = None) -> Path:
    """Write a benchmark record as JSON (bench/results/NAME.json unless `path` is given)."""
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def print_rows(rows: list[tuple[str, str, str]], width: int = 24) -> None:
    """A metric | value | note table on stdout."""
    print(f"\n{'metric':<{width}}{'value':>12}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}{value:>12}  {note}")
