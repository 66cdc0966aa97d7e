"""Data-parallel training under `torchrun` (gloo on CPU, NCCL on GPU).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; with WORLD_SIZE > 1 we join the process
group. Every rank holds a full model replica; each optimiser step averages gradients
across ranks with one all-reduce (see ManagedOptimizer), which is what
DistributedDataParallel does, done explicitly so that families with several optimisers
and several forward passes per step (GANs) need no wrapper. Rank 0 alone logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import GenlabError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # one GPU per rank; otherwise every rank touches GPU 0
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda (this process's LOCAL_RANK GPU), then mps, then cpu."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GenlabError(f"unknown device {name!r}", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenlabError("device=cuda was asked for but no CUDA GPU is available", "use device=auto or device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GenlabError("device=mps was asked for but MPS is not available", "use device=auto or device=cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has AMX tiles, on which oneDNN multiplies bf16 matrices several times faster than fp32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: assume not
        return False


def all_reduce_mean_(flat: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(info.world_size)
    return flat


def all_reduce_sum_(flat: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return flat


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Start every rank from rank 0's weights (and buffers)."""
    if info.enabled:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def ranks_in_sync(module: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds bit-identical parameters (compared by a float64 checksum
    and the max over ranks of the difference from rank 0's weights)."""
    if not info.enabled:
        return True
    flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item() == 0.0


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        # Every rank leaves together: a rank that tears down its gloo connections while the main
        # rank still writes the model directory can abort ("terminate called without an active exception").
        try:
            dist.barrier()
        except RuntimeError:
            pass
        dist.destroy_process_group()
