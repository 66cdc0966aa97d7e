"""Atomic, pickle-free training checkpoints.

One safetensors file holds the model weights, the EMA weights and every optimiser's
tensor state; everything else (step, optimiser hyper-parameters, scalar state) is JSON in
the file's metadata. It is written to a temporary file, fsynced and renamed over the old
one, so a crash at any moment leaves either the old or the new checkpoint, never half.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import GenlabError
from ..fileio import atomic_save_safetensors


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    ema_state: dict[str, torch.Tensor] | None,
    meta: dict,
) -> None:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema_state is not None:
        tensors.update({f"ema/{k}": v for k, v in ema_state.items()})
    optim_json = {}
    for name, opt in optimizers.items():
        state = opt.state_dict()
        scalars = {}
        for pid, pstate in state["state"].items():
            for key, value in pstate.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{name}/{pid}/{key}"] = value
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        optim_json[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    metadata = {"genlab": json.dumps({**meta, "optimizers": optim_json})}
    atomic_save_safetensors(tensors, path, metadata)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]):
    """Restore model and optimisers in place; returns (meta, ema_state or None)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
        meta = json.loads(metadata["genlab"])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise GenlabError(
            f"cannot read checkpoint {path}: {e}",
            "the file is damaged; delete it to start the run again from scratch",
        ) from None
    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as e:
        raise GenlabError(f"checkpoint {path} does not match the model: {str(e).splitlines()[0]}") from None
    for name, opt in optimizers.items():
        saved = meta["optimizers"].get(name)
        if saved is None:
            raise GenlabError(f"checkpoint {path} has no state for optimizer {name!r}")
        state: dict = {}
        prefix = f"optim/{name}/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, field = key[len(prefix) :].split("/", 1)
                state.setdefault(int(pid), {})[field] = value
        for pid, fields in saved["scalars"].items():
            state.setdefault(int(pid), {}).update(fields)
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    ema = {k[len("ema/") :]: v for k, v in tensors.items() if k.startswith("ema/")} or None
    return meta, ema
