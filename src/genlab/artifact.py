"""A model is a directory: config.json + model.safetensors (+ tokenizer.json for text models,
metrics.json, samples.png or samples.txt).

config.json holds everything needed to rebuild the model (family, model hyper-parameters,
data spec, training settings, genlab version); model.safetensors holds the weights. Loading
never executes code from the artifact: the family is looked up in genlab's own registry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ._version import __version__
from .config import from_dict
from .data.text import save_tokenizer
from .data.tokenizer_files import load_tokenizer  # text and text-pair tokenizers alike
from .errors import GenlabError
from .registry import get_family
from .fileio import atomic_save_safetensors, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METRICS_NAME = "metrics.json"


def write_config(directory: Path, config: dict) -> Path:
    path = Path(directory) / CONFIG_NAME
    atomic_write_text(path, json.dumps({"genlab_version": __version__, **config}, indent=2) + "\n")
    return path


def read_config(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.exists():
        raise GenlabError(f"no model at {directory}", "pass a model directory written by `genlab train` (it holds config.json)")
    if not directory.is_dir():
        raise GenlabError(f"{directory} is a file, not a model directory", "pass the directory that holds config.json and model.safetensors")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise GenlabError(f"{directory} is not a genlab model directory: it has no {CONFIG_NAME}", "pass a directory written by `genlab train`")
    try:
        config = json.loads(path.read_text())
    except OSError as e:
        raise GenlabError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenlabError(f"{path} is not valid JSON ({e})", "the file is damaged; restore it or train the model again") from None
    if not isinstance(config, dict) or not isinstance(config.get("family"), str) or not all(
        isinstance(config.get(key), dict) for key in ("model", "data", "train")
    ):
        raise GenlabError(
            f"{path} is not a complete genlab model config (it needs 'family', 'model', 'data' and 'train')",
            "the file is damaged; restore it or train the model again",
        )
    return config


def save(model, directory: str | Path, config: dict | None = None, *, weights: bool = True) -> Path:
    """Write a model directory that `load` restores: config.json (when given), the tokenizer
    (tokenizer.json, for models that have one) and model.safetensors (unless weights=False, as
    at the start of training, when only the config and tokenizer are known)."""
    directory = Path(directory)
    if config is not None:
        write_config(directory, config)
    if model.tokenizer is not None:
        save_tokenizer(model.tokenizer, directory)
    if weights:
        atomic_save_safetensors(dict(model.state_dict()), directory / WEIGHTS_NAME,
                                metadata={"format": "pt", "genlab_version": __version__})
    return directory


def build_model(config: dict):
    family = get_family(config["family"])
    return family(from_dict(family.config_class, config["model"], "model"))


def memory_bytes() -> int:
    """This machine's physical memory (16 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def shape_model(config: dict):
    """The model `config` describes, built on the meta device: every tensor's shape and dtype, no memory."""
    with torch.device("meta"):
        return build_model(config)


def check_size(model, purpose: str, copies: int = 1, hint: str | None = None) -> int:
    """Refuse a model whose tensors (times `copies`: gradients, optimiser moments, EMA) would not fit in
    most of this machine's memory, naming the biggest tensor; returns the bytes it needs."""
    state = model.state_dict()
    needed = copies * sum(t.numel() * t.element_size() for t in state.values())
    available = memory_bytes()
    if needed > 0.8 * available:
        name, biggest = max(state.items(), key=lambda item: item[1].numel())
        count = sum(p.numel() for p in model.parameters())
        raise GenlabError(
            f"the model has {count:,} parameters: {purpose} needs {needed / 2**30:,.1f} GiB, more than this machine's "
            f"{available / 2**30:.0f} GiB (the largest tensor, {name}, is {list(biggest.shape)})",
            hint or "make the model's size settings (model.*: hidden, latent_dim, n_embd, ...) smaller")
    return needed


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def check_weights(directory: str | Path, config: dict | None = None):
    """Check model.safetensors against what config.json implies by reading only the file's header:
    the same tensor names, shapes and dtypes, and a size this machine can hold. Nothing is allocated,
    so a hand-edited config cannot make a load cost gigabytes before it fails. Returns the
    meta-device model (shapes only)."""
    directory = Path(directory)
    config = config or read_config(directory)
    weights = directory / WEIGHTS_NAME
    expected = shape_model(config)
    check_size(expected, "loading it", hint="the config.json does not describe a model this machine can hold; "
               "restore it or train the model again")
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise GenlabError(f"{weights.name} in {directory.name} is damaged or not a safetensors file ({e})",
                          "the file was truncated or replaced; restore it or train the model again") from None
    want = {k: (tuple(t.shape), SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype))) for k, t in expected.state_dict().items()}
    problems = {
        "missing": sorted(set(want) - set(found)),
        "unexpected": sorted(set(found) - set(want)),
        "wrong shape": sorted(k for k in set(want) & set(found) if want[k][0] != found[k][0]),
        "wrong dtype": sorted(f"{k} ({found[k][1]}, expected {want[k][1]})" for k in set(want) & set(found)
                              if want[k][0] == found[k][0] and want[k][1] != found[k][1]),
    }
    parts = [f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}" for label, keys in problems.items() if keys]
    if parts:
        raise GenlabError(f"{weights.name} in {directory.name} does not match {CONFIG_NAME} for a {config['family']} "
                          f"model ({'; '.join(parts)})", "the weights belong to a different model, or one of the files "
                          "was edited; copy the model directory as a whole, or train the model again")
    return expected


def load(path: str | Path, device: str | torch.device = "cpu"):
    """Restore a model of any registered family from its directory."""
    directory = Path(path)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        if (directory / "checkpoint.safetensors").is_file():
            raise GenlabError(
                f"{directory} holds an unfinished training run (no {WEIGHTS_NAME} yet)",
                f"finish it with `genlab train --resume {directory}`",
            )
        raise GenlabError(f"{directory} has no {WEIGHTS_NAME}", "the weights are missing; train the model again")
    check_weights(directory, config)  # from the header: names, shapes, dtypes and size, before any allocation
    model = build_model(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise GenlabError(
            f"{weights.name} in {directory.name} is damaged or not a safetensors file ({e})",
            "the file was truncated or replaced; restore it or train the model again",
        ) from None
    broken = sorted(k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if broken:
        raise GenlabError(f"{weights.name} in {directory.name} holds NaN or infinite weights ({', '.join(broken[:4])})",
                          "the model diverged or the file was damaged; train it again (or restore the file)")
    model.load_state_dict(state)
    model.eval()
    if model.needs_tokenizer:
        model.tokenizer = load_tokenizer(directory)
        if model.tokenizer.vocab_size != config["model"].get("vocab_size"):
            raise GenlabError(
                f"{directory}/tokenizer.json has {model.tokenizer.vocab_size} tokens but the model has "
                f"{config['model'].get('vocab_size')}",
                "the tokenizer belongs to a different model; copy the directory as a whole",
            )
    model.artifact_config = config
    model.artifact_dir = directory
    return model.to(device)


def read_metrics(directory: str | Path) -> dict:
    """A model directory's metrics.json ({} when it has none, or when it is damaged: it only records)."""
    path = Path(directory) / METRICS_NAME
    try:
        metrics = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def write_metrics(directory: Path, metrics: dict) -> Path:
    """Merge `metrics` into metrics.json (keys from earlier evaluations are kept)."""
    path = Path(directory) / METRICS_NAME
    existing = read_metrics(directory)
    existing.update(metrics)
    atomic_write_text(path, json.dumps(existing, indent=2) + "\n")
    return path


def write_evaluation(directory: str | Path, result: dict) -> Path:
    """Record a `genlab eval` result in metrics.json: "eval" is the latest, "evals" keeps one entry
    per data set and split evaluated against. A model directory that cannot be written (read-only,
    say) gets the record beside it instead, as NAME.metrics.json (else in the working directory),
    with a notice: a finished evaluation is never lost. Returns the file written."""
    directory = Path(directory)
    path = directory / METRICS_NAME
    existing = read_metrics(directory)
    evals = existing.get("evals") if isinstance(existing.get("evals"), dict) else {}
    record = {**existing, "eval": result, "evals": {**evals, result.get("data", "?"): result}}
    text = json.dumps(record, indent=2) + "\n"
    for target in (path, directory.resolve().parent / f"{directory.resolve().name}.metrics.json",
                   Path.cwd() / f"{directory.resolve().name}.metrics.json"):
        try:
            atomic_write_text(target, text)
        except OSError:
            continue
        if target != path:
            from .errors import warn

            warn(f"cannot write {path.name} in {directory} (not writable): the results went to {target}")
        return target
    raise GenlabError(f"cannot write the evaluation to {path} or beside it", "the results are printed above")
