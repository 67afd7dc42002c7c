"""Per-step schedules as tensors indexed by the global step (DINO's per-iteration tables)."""
from __future__ import annotations

import math

import torch


def warmup_cosine(base: float, final: float, total: int, warmup: int, start: float = 0.0) -> torch.Tensor:
    """Linear warm-up from ``start`` to ``base`` over ``warmup`` steps, then half-cosine to ``final``.

    Step i of the warm-up has ``start + (base - start) * i / warmup`` (MoCo v3's per-iteration rule).
    """
    if total < 1 or warmup < 0 or (warmup and warmup >= total):
        raise ValueError(f"warmup_cosine: need 0 <= warmup ({warmup}) < total ({total})")
    steps = torch.arange(total, dtype=torch.float64)
    out = torch.empty(total, dtype=torch.float64)
    if warmup:
        w = steps[:warmup]
        out[:warmup] = start + (base - start) * w / warmup
    rest = steps[warmup:] - warmup
    span = max(total - warmup, 1)
    out[warmup:] = final + (base - final) * 0.5 * (1 + torch.cos(math.pi * rest / span))
    return out


def cosine_to(start: float, final: float, total: int) -> torch.Tensor:
    """Half-cosine from ``start`` at step 0 to ``final`` at step ``total`` (MoCo v3's momentum rule)."""
    steps = torch.arange(total, dtype=torch.float64)
    return final - (final - start) * 0.5 * (1 + torch.cos(math.pi * steps / max(total, 1)))


def warmup_constant(start: float, final: float, total: int, warmup: int) -> torch.Tensor:
    """Linear ramp from ``start`` to ``final`` over ``warmup`` steps, then ``final`` (DINO's teacher temperature).

    Step i of the ramp has ``start + (final - start) * i / warmup``; ``warmup`` may exceed ``total``
    (the table then ends inside the ramp).
    """
    if total < 1 or warmup < 0:
        raise ValueError(f"warmup_constant: need total ({total}) >= 1 and warmup ({warmup}) >= 0")
    steps = torch.arange(total, dtype=torch.float64)
    if warmup == 0:
        return torch.full((total,), float(final), dtype=torch.float64)
    ramp = start + (final - start) * steps / warmup
    return torch.where(steps < warmup, ramp, torch.full_like(steps, float(final)))


def at(table: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``table[step]`` for a 0-dim int64 device ``step``, as a 0-dim tensor, without a host read.

    (Indexing with ``table[step]`` would turn a 0-dim integer tensor into a Python index: a sync.)
    """
    return table.index_select(0, step.reshape(1)).squeeze(0)
