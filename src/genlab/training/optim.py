"""ManagedOptimizer: the one place a family's loss turns into a parameter update.

A family calls `optimizers["main"].step(loss)`; this does the parts the Trainer owns:
backward, cross-rank gradient averaging, the finiteness check, clipping, the update.
A non-finite loss or gradient raises DivergenceError *before* the update, so the weights
(and the last checkpoint) stay good.
"""

from __future__ import annotations

import math

import torch

from ..errors import DivergenceError
from .distributed import DistInfo, all_reduce_mean_



class ManagedOptimizer:
    def __init__(self, name: str, optimizer: torch.optim.Optimizer, *, grad_clip: float | None, dist_info: DistInfo):
        self.name = name
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.dist_info = dist_info
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.last_grad_norm = float("nan")

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = []
        for p in self.params:
            if p.grad is None:  # every rank must reduce the same layout
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        loss_value = loss.detach().float().reshape(1)
        if self.dist_info.enabled:
            # One flat buffer: one collective per step; the loss rides along so that every
            # rank sees a divergence on any rank and all stop together.
            flat = torch.cat([g.reshape(-1) for g in grads] + [loss_value])
            all_reduce_mean_(flat, self.dist_info)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            loss_value = flat[-1:]
        max_norm = self.grad_clip if self.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        loss_f, norm_f = loss_value.item(), grad_norm.item()
        if not math.isfinite(loss_f) or not math.isfinite(norm_f):
            what = f"loss={loss_f}" if not math.isfinite(loss_f) else f"gradient norm={norm_f}"
            raise DivergenceError(
                f"training diverged: {what} for optimizer {self.name!r}",
                "lower the learning rate (lr=...), enable clipping (grad_clip=1.0), or check the data for NaN/Inf",
            )
        self.last_grad_norm = norm_f
        self.optimizer.step()
