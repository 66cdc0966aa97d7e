"""Small tensor helpers every layer may use: seeded draws and a temporary eval mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# Seeded draws happen on the generator's own device, then move to where they are used: a CPU
# generator gives the same numbers whichever device the model is on (as diffusers' randn_tensor).


def _draw_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device | str:
    return generator.device if generator is not None else device


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal draws of `shape` from `generator` (on its own device), moved to `device`."""
    return torch.randn(shape, generator=generator, device=_draw_device(generator, device), dtype=dtype).to(device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """Uniform [0, 1) draws of `shape` from `generator` (on its own device), moved to `device`."""
    return torch.rand(shape, generator=generator, device=_draw_device(generator, device)).to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers in [0, high) of `shape` from `generator` (on its own device), moved to `device`."""
    return torch.randint(high, shape, generator=generator, device=_draw_device(generator, device)).to(device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (dropout off, batch norm on running statistics) inside the block,
    back in the mode it was in afterwards, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
