"""Exponential moving average of weights (Polyak averaging), used for evaluation and export.

The decay warms up as min(decay, (1 + t) / (10 + t)) at update t, so the average forgets its
random initialisation within tens of steps instead of thousands (with a fixed 0.999, a run of
800 steps would still export 45% initial weights). t is the Trainer's step, which the
checkpoint restores, so resumed runs average exactly as uninterrupted ones.
"""

from __future__ import annotations

import contextlib

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, names: list[str], decay: float):
        if not 0.0 < decay < 1.0:
            from ..errors import GenlabError

            raise GenlabError(f"ema_decay must be in (0, 1), got {decay}", "a typical value is 0.999")
        self.decay = decay
        params = dict(model.named_parameters())
        self.params = {n: params[n] for n in names}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = self.decay_at(step)
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, t in state.items():
            self.shadow[name].copy_(t)

    @contextlib.contextmanager
    def swapped_in(self):
        """Temporarily put the averaged weights into the model (for eval, samples, export)."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])
