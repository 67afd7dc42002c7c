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

import torch
from torch import nn

from sdmp_fast.augment.recipes import Recipe
from sdmp_fast.registry import METHODS
from sdmp_fast.schema import ConfigError
from sdmp_fast.streams import StepRandom


class Method(nn.Module):
    ema_before_forward: bool = True
    # run.fused: one student / one teacher forward over the concatenated views (``encode``)
    fused: bool = True

    @classmethod
    def from_config(cls, cfg, backbone: nn.Module) -> "Method":  # pragma: no cover - interface
        """The method of ``cfg`` around ``backbone``, with the run's SDMP Mixer (``kernels.select_mixer``)."""
        raise NotImplementedError

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
    if cfg.method.name not in METHODS:
        raise ConfigError(f"method.name = {cfg.method.name!r}: choose one of {', '.join(METHODS.names())}")
    method = METHODS.get(cfg.method.name).from_config(cfg, backbone)
    method.fused = cfg.run.fused
    return method


def method_recipe(cfg) -> Recipe:
    if cfg.method.name not in METHODS:
        raise ConfigError(f"method.name = {cfg.method.name!r}: choose one of {', '.join(METHODS.names())}")
    return METHODS.get(cfg.method.name).recipe(cfg)
