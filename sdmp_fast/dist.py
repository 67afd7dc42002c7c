"""Rank/world helpers that are the identity in a single process, so every loss runs on CPU.

The engine is torch.distributed (torchrun; NCCL on GPUs, gloo on CPU). Rule used by every loader:
per-rank batch = global batch / world, and every rank runs floor(samples / global batch) steps per
epoch, so no rank waits on a collective that another rank never reaches.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def init_from_env(device: torch.device | None = None, timeout_s: float = 600.0) -> bool:
    """Join the process group torchrun describes (RANK/WORLD_SIZE env); no-op without it.

    Returns True when a process group is (now) initialised. gloo on CPU, nccl on CUDA.
    """
    if is_dist():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    """Barrier, then destroy the group (without the barrier gloo teardown can abort on torch 2.14)."""
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [B, ...] from every rank along dim 0 (no gradient); identity in one process."""
    if not is_dist() or get_world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(get_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a new tensor, no gradient); identity in one process. No host sync."""
    if not is_dist() or get_world() == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out.div_(get_world())


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from ``src`` to every rank (a host sync: use at logging points only)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_max_int(value: int) -> int:
    """Max of a small integer over ranks (used to agree on error/stop flags without a hang)."""
    if not is_dist():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
