"""What every method provides to the trainer.

A method owns a student (trained by the optimizer) and a teacher (updated by EMA, never by
gradients). ``forward(views, rng)`` returns ``(loss, logs)`` without side effects on the teacher;
the EMA runs in the training step, before the forward (``ema_before_forward``: MoCo v3 updates the
momentum encoder before computing keys) or after the optimizer step (DINO).

Hooks with defaults that change nothing (MoCo v3 uses the defaults):

* ``param_groups()``: the optimizer's parameter groups (default: one group, weight decay on all);
* ``prepare(res)``: called once by the trainer with the resolved step counts (per-step tables);
* ``set_step(step, step_t)``: called before each step's forward (host tables by ``step`` for the logs, device
  tables by the device step ``step_t`` for the computation: no sync);
* ``compile_targets()``: the modules ``run.compile`` compiles (default none);
* ``after_backward(step)``: called after backward and clipping, before the optimizer step;
* ``step_info()``: host-side floats (scheduled values) added to the log lines;
* ``view_grid(views, index, rng)``: the columns of ``--dump-views`` for SDMP methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sdmp_fast.models.norm import bn_chunks
from sdmp_fast.registry import METHODS
from sdmp_fast.views import Recipe


class HostStream:
    """A seeded random stream that lives on the host as plain Python/numpy state (no tensors).

    Drawing from it never touches a tensor, so it can decide host-side things (which mixing op, which
    view is the query) inside a step that must not synchronise with the device, and it reads the same
    on every rank. Its state is a dict of ints and strings (checkpoints load it with weights_only).
    """

    def __init__(self, seed: int):
        self._gen = np.random.Generator(np.random.PCG64(seed))

    def choice(self, n: int) -> int:
        """Uniform in 0 .. n-1."""
        return int(self._gen.integers(n))

    def coin(self) -> bool:
        """True with probability 1/2."""
        return bool(self._gen.random() < 0.5)

    def state_dict(self) -> dict:
        return self._gen.bit_generator.state

    def load_state_dict(self, state) -> None:
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError("the checkpoint's shared random stream is not a PCG64 state (a checkpoint written before "
                             "the host stream existed): it cannot be resumed exactly by this version; start a new run")
        self._gen.bit_generator.state = state


@dataclass
class StepRandom:
    """The random streams of a step.

    ``shared``: a host stream seeded identically on every rank (view-swap coin, mixing op): ranks agree
    without communication, and drawing from it never synchronises with the device.
    ``local``: a generator on the training device seeded with seed + rank (lambda, boxes): ranks differ.
    ``shared_device``: a generator on the training device seeded identically on every rank, for the
    same decisions as ``shared`` when they must be device values (``Method.device_draws``: a captured
    CUDA graph cannot take host decisions per replay).
    """
    shared: HostStream
    local: torch.Generator
    shared_device: torch.Generator

    @classmethod
    def create(cls, seed: int, rank: int, device: torch.device) -> "StepRandom":
        shared = HostStream(seed * 7919 + 17)
        local = torch.Generator(device=device).manual_seed(seed * 7919 + 1_000_003 * (rank + 1))
        shared_device = torch.Generator(device=device).manual_seed(seed * 7919 + 29)
        return cls(shared, local, shared_device)

    def state_dict(self) -> dict:
        return {"shared": self.shared.state_dict(), "local": self.local.get_state(),
                "shared_device": self.shared_device.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.shared.load_state_dict(state["shared"])
        self.local.set_state(state["local"])
        self.shared_device.set_state(state["shared_device"])


def encode(net: nn.Module, xs: list[torch.Tensor] | tuple[torch.Tensor, ...], fused: bool) -> list[torch.Tensor]:
    """``[net(x) for x in xs]``; with ``fused`` one forward of the concatenation, BatchNorm per x.

    The fused pass splits every ``ChunkedSyncBatchNorm`` batch into len(xs) chunks (``bn_chunks``), so
    each view keeps its own statistics and running buffers end as after one forward per view; other
    layers (LayerNorm, attention, linear) act per sample. The views must have equal batch sizes.
    """
    if not fused or len(xs) == 1:
        return [net(x) for x in xs]
    with bn_chunks(net, len(xs)):
        return list(net(torch.cat(list(xs))).chunk(len(xs)))


class Method(nn.Module):
    ema_before_forward: bool = True
    # run.fused: one student / one teacher forward over the concatenated views (``encode``)
    fused: bool = True
    # random decisions of a step (mixing op, view swap) as device values instead of host draws: set by
    # the trainer for run.cuda_graph, where a host decision would be frozen into the captured graph
    device_draws: bool = False

    @staticmethod
    def recipe(cfg) -> Recipe:  # pragma: no cover - interface
        raise NotImplementedError

    def student_parameters(self) -> list[nn.Parameter]:  # pragma: no cover - interface
        raise NotImplementedError

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # pragma: no cover - interface
        """(teacher tensors, matching student tensors) for the EMA."""
        raise NotImplementedError

    def export_backbone(self) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups; ``"apply_wd": False`` marks a group without weight decay."""
        return [{"params": [p for p in self.student_parameters() if p.requires_grad]}]

    def prepare(self, res) -> None:
        """Build per-step tables from the resolved step counts (``config.Resolved``)."""

    def set_step(self, step: int, step_t: torch.Tensor | None = None) -> None:
        """Select this step's scheduled values: host floats for the logs from ``step``; the values the
        step computes with from device tables indexed by ``step_t`` (0-dim int64 on the device, no sync;
        inside a captured graph ``step`` is the capture-time step and only ``step_t`` moves)."""

    def compile_targets(self) -> list[nn.Module]:
        """The modules ``run.compile`` compiles in place (their state-dict names are kept)."""
        return []

    def after_backward(self, step: int) -> None:
        """Adjust gradients after backward and clipping, before the optimizer step."""

    def phase(self, step: int) -> int:
        """Host-side decisions of the step that change during training (DINO's frozen last layer): a
        captured CUDA graph is re-captured when the phase changes."""
        return 0

    def step_info(self) -> dict[str, float]:
        """Scheduled values of the current step, for the log lines."""
        return {}

    def view_grid(self, views: list[torch.Tensor], index: torch.Tensor,
                  rng: "StepRandom") -> tuple[dict[str, torch.Tensor], dict[str, list[str]], str]:  # pragma: no cover
        """(columns {name: [B, 3, H, W]}, captions {name: [B] strings}, title) of one SDMP step's views."""
        raise NotImplementedError(f"{type(self).__name__} has no SDMP views to show")

    def forward(self, views: list[torch.Tensor], rng: StepRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError


def build_method(cfg, backbone: nn.Module) -> Method:
    from sdmp_fast.config import ConfigError
    if cfg.method.name not in METHODS:
        raise ConfigError(f"method.name = {cfg.method.name!r}: choose one of {', '.join(METHODS.names())}")
    method = METHODS.get(cfg.method.name).from_config(cfg, backbone)
    method.fused = cfg.run.fused
    return method


def method_recipe(cfg) -> Recipe:
    from sdmp_fast.config import ConfigError
    if cfg.method.name not in METHODS:
        raise ConfigError(f"method.name = {cfg.method.name!r}: choose one of {', '.join(METHODS.names())}")
    return METHODS.get(cfg.method.name).recipe(cfg)
