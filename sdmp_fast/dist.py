"""Rank/world helpers that are the identity in a single process, so every loss runs on CPU.

The engine is torch.distributed (torchrun; NCCL on GPUs, gloo on CPU). Rule used by every loader:
per-rank batch = global batch / world, and every rank runs floor(samples / global batch) steps per
epoch, so no rank waits on a collective that another rank never reaches.
"""
from __future__ import annotations

import datetime
import math
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


def init_from_env(device: torch.device | None = None, timeout_s: float = 1800.0) -> bool:
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


def _host_value_device() -> torch.device:
    """Where a small host value travels for a collective: NCCL only moves CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks in the forward, and again in the backward (the gradient of a sum that every rank uses).

    Each rank's loss depends on the summed tensor, so the gradient reaching a rank's input is the sum
    of every rank's gradient: a SUM all-reduce in both directions, each on a clone (in-place
    collectives on autograd inputs or saved gradients would corrupt them). A plain Function around
    ``dist.all_reduce``: works on gloo and NCCL and can be captured in a CUDA graph, unlike the
    deprecated ``torch.distributed.nn.functional.all_reduce``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum_autograd(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``x`` over ranks (SUM all-reduce forward and backward); identity in one process."""
    if not is_dist() or get_world() == 1:
        return x
    return _AllReduceSum.apply(x)


def broadcast_flag(value: bool, src: int = 0) -> bool:
    """Rank ``src``'s boolean on every rank: wall-clock decisions (timed checkpoints) taken once, at a sync point."""
    if not is_dist():
        return value
    t = torch.tensor([int(value)], dtype=torch.int64, device=_host_value_device())
    dist.broadcast(t, src=src)
    return bool(t.item())


def all_gather_object(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (a host sync: checkpoints and logging points only)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world()
    dist.all_gather_object(out, obj)
    return out


def main_first(fn):
    """Run ``fn()`` on rank 0, then on the other ranks (rank 0 materialises caches they then read).

    An exception on rank 0 is raised on every rank, with the same type and message, instead of leaving
    the others waiting in a collective that rank 0 never reaches.
    """
    if not is_dist():
        return fn()
    result, failure = None, None
    if is_main():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below on every rank
            failure = e
    shared = broadcast_object(None if failure is None else (type(failure), str(failure)))
    if shared is not None:
        if failure is not None:
            raise failure
        kind, message = shared
        raise kind(message)
    return result if is_main() else fn()


def rank_block(n: int) -> range:
    """This rank's contiguous share of ``n`` items (ceil(n / world) each, the last ranks fewer; all of them in one process)."""
    per = math.ceil(n / get_world())
    r = get_rank()
    return range(min(r * per, n), min((r + 1) * per, n))


def gather_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """The full ``[n, ...]`` tensor from every rank's ``rank_block(n)`` rows (no gradient); identity in one process."""
    if get_world() == 1:
        return x
    per = math.ceil(n / get_world())
    pad = torch.zeros(per, *x.shape[1:], dtype=x.dtype, device=x.device)
    pad[:x.shape[0]] = x
    return all_gather_cat(pad)[:n]
