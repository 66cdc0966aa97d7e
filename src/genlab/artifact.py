"""A model is a directory: config.json + model.safetensors (+ tokenizer.json for text models,
metrics.json, samples.png or samples.txt).

config.json holds everything needed to rebuild the model (family, model hyper-parameters,
data spec, training settings, genlab version); model.safetensors holds the weights. Loading
never executes code from the artifact: the family is looked up in genlab's own registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ._version import __version__
from .config import from_dict
from .data.text import load_tokenizer, save_tokenizer
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
    model = build_model(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise GenlabError(
            f"{weights} is damaged or not a safetensors file ({e})",
            "the file was truncated or replaced; restore it or train the model again",
        ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
        raise GenlabError(
            f"{weights} does not match {CONFIG_NAME} for a {config['family']} model ({'; '.join(parts)})",
            "the weights belong to a different model; copy the directory as a whole",
        )
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


def write_metrics(directory: Path, metrics: dict) -> Path:
    """Merge `metrics` into metrics.json (keys from earlier evaluations are kept)."""
    path = Path(directory) / METRICS_NAME
    existing = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            existing = {}
    existing.update(metrics)
    atomic_write_text(path, json.dumps(existing, indent=2) + "\n")
    return path
