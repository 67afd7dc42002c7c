"""The op draw of an SDMP step and the mixing of its views, chosen once per run (``build_mixer``).

Per step a method draws one op uniformly from ``ops`` on a stream every rank shares (all ranks mix alike
without communicating) and one lam ~ Beta(alpha, alpha) per image on its rank's device stream, then mixes
any number of views with them (independent boxes per view). Where the shared decisions come from is the
one difference between the two mixers: a host stream (``HostMixer``: no device sync, the op is a name, any
implementation of ``mix``) or a device generator (``DeviceMixer``: device values that a captured CUDA
graph draws anew on every replay, where a host decision would be frozen into the graph).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from sdmp_fast.mixing.blend import mix as torch_mix
from sdmp_fast.mixing.params import check_op, op_code, sample_lam
from sdmp_fast.streams import StepRandom


@dataclass(frozen=True)
class Mixer:
    """The mixing of an SDMP run.

    Args:
        ops: the ops drawn from, uniformly (names in ``OPS``).
        alpha: lam ~ Beta(alpha, alpha).
        mix_fn: ``mix(x, lam, op, generator=)`` -> (mixed, lam_eff): the torch reference or its Triton twin.
    """

    ops: tuple[str, ...]
    alpha: float = 1.0
    mix_fn: Callable = torch_mix

    def __post_init__(self):
        if not self.ops:
            raise ValueError("a Mixer needs at least one op")
        for op in self.ops:
            check_op(op)

    def draw_op(self, rng: StepRandom, device: torch.device) -> str | Tensor:  # pragma: no cover - interface
        """The step's op, the same on every rank."""
        raise NotImplementedError

    def swap(self, a: Tensor, b: Tensor, rng: StepRandom) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        """(a, b) or (b, a) on a fair coin, the same on every rank."""
        raise NotImplementedError

    def label(self, op: str | Tensor) -> str:  # pragma: no cover - interface
        """The op as a caption (for pictures)."""
        raise NotImplementedError

    def lam(self, batch: int, rng: StepRandom, device: torch.device) -> Tensor:
        """[batch] float32 lam ~ Beta(alpha, alpha) from the rank's own stream."""
        return sample_lam(batch, self.alpha, generator=rng.local, device=device)

    def mix(self, x: Tensor, lam: Tensor, op: str | Tensor, rng: StepRandom) -> tuple[Tensor, Tensor]:
        """x[i] mixed with x[B-1-i] by ``op`` (boxes from the rank's own stream): (mixed, lam_eff [B] float32)."""
        return self.mix_fn(x, lam, op, generator=rng.local)


class HostMixer(Mixer):
    """Shared decisions from ``rng.shared``, a host stream: drawing never waits on the device."""

    def draw_op(self, rng: StepRandom, device: torch.device) -> str:
        return self.ops[rng.shared.choice(len(self.ops))]

    def swap(self, a: Tensor, b: Tensor, rng: StepRandom) -> tuple[Tensor, Tensor]:
        return (b, a) if rng.shared.coin() else (a, b)

    def label(self, op: str) -> str:
        return op


class DeviceMixer(Mixer):
    """Shared decisions from ``rng.shared_device``: the op is its code in ``OPS`` and the swap a select."""

    def draw_op(self, rng: StepRandom, device: torch.device) -> Tensor:
        return op_code(torch.randint(len(self.ops), (), generator=rng.shared_device, device=device), self.ops)

    def swap(self, a: Tensor, b: Tensor, rng: StepRandom) -> tuple[Tensor, Tensor]:
        s = torch.rand((), generator=rng.shared_device, device=a.device) < 0.5
        return torch.where(s, b, a), torch.where(s, a, b)

    def label(self, op: Tensor) -> str:
        return "drawn on the device"


def build_mixer(ops: tuple[str, ...], alpha: float = 1.0, device_draws: bool = False,
                mix_fn: Callable = torch_mix) -> Mixer:
    """The Mixer of a run; ``device_draws`` for a step captured in a CUDA graph (``run.cuda_graph``).

    Device-drawn ops are mixed by the torch reference, which takes an op code; the Triton kernel is
    specialised per op at compile time and takes a name.
    """
    if device_draws:
        if mix_fn is not torch_mix:
            raise ValueError("device-drawn ops are mixed by the torch reference (sdmp_fast.mixing.mix)")
        return DeviceMixer(tuple(ops), alpha)
    return HostMixer(tuple(ops), alpha, mix_fn)
