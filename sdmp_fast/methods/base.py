"""What every method provides to the trainer.

A method owns a student (trained by the optimizer) and a teacher (updated by EMA, never by
gradients). ``forward(views, rng)`` returns ``(loss, logs)`` without side effects on the teacher;
the EMA runs in the training step, before the forward (``ema_before_forward``: MoCo v3 updates the
momentum encoder before computing keys) or after the optimizer step (DINO).

Hooks with defaults that change nothing (MoCo v3 uses the defaults):

* ``param_groups()``: the optimizer's parameter groups (default: one group, weight decay on all);
* ``prepare(res)``: called once by the trainer with the resolved step counts (per-step tables);
* ``set_step(step)``: called before each step's forward (read host-side tables by index, no sync);
* ``after_backward(step)``: called after backward and clipping, before the optimizer step;
* ``step_info()``: host-side floats (scheduled values) added to the log lines;
* ``view_grid(views, index, rng)``: the columns of ``--dump-views`` for SDMP methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sdmp_fast.registry import METHODS
from sdmp_fast.views import Recipe


@dataclass
class StepRandom:
    """The two random streams of a step.

    ``shared``: a CPU generator seeded identically on every rank (view-swap coin, mixing op): ranks agree
    without communication, and drawing from it never synchronises with the device.
    ``local``: a generator on the training device seeded with seed + rank (lambda, boxes): ranks differ.
    """
    shared: torch.Generator
    local: torch.Generator

    @classmethod
    def create(cls, seed: int, rank: int, device: torch.device) -> "StepRandom":
        shared = torch.Generator().manual_seed(seed * 7919 + 17)
        local = torch.Generator(device=device).manual_seed(seed * 7919 + 1_000_003 * (rank + 1))
        return cls(shared, local)

    def state_dict(self) -> dict:
        return {"shared": self.shared.get_state(), "local": self.local.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.shared.set_state(state["shared"])
        self.local.set_state(state["local"])


class Method(nn.Module):
    ema_before_forward: bool = True

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

    def set_step(self, step: int) -> None:
        """Select this step's scheduled values (host-side)."""

    def after_backward(self, step: int) -> None:
        """Adjust gradients after backward and clipping, before the optimizer step."""

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
    return METHODS.get(cfg.method.name).from_config(cfg, backbone)


def method_recipe(cfg) -> Recipe:
    from sdmp_fast.config import ConfigError
    if cfg.method.name not in METHODS:
        raise ConfigError(f"method.name = {cfg.method.name!r}: choose one of {', '.join(METHODS.names())}")
    return METHODS.get(cfg.method.name).recipe(cfg)
