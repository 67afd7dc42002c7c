"""The backbone contract shared by ViTs and ResNets.

A backbone is a timm model built with ``num_classes=0`` (its forward returns pooled features
``[B, D]``); ``model.sdmp_spec`` records the timm model name and constructor kwargs so an export can
be rebuilt with ``timm.create_model(name, **kwargs)`` without guessing (a 12-head ViT-S loads into a
6-head ViT-S without a shape error and silently computes something else).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import nn

from sdmp_fast.registry import BACKBONES
from sdmp_fast.schema import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def create_timm(spec: BackboneSpec) -> nn.Module:
    model = timm.create_model(spec.timm_name, pretrained=False, **spec.kwargs)
    model.sdmp_spec = spec
    return model


def build_backbone(cfg) -> nn.Module:
    """Build ``model.backbone`` for ``data.image_size`` (the only place that reads the model config)."""
    if cfg.model.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone = {cfg.model.backbone!r}: choose one of {', '.join(BACKBONES.names())}")
    model = BACKBONES.build(cfg.model.backbone, img_size=cfg.data.image_size, drop_path=cfg.model.drop_path)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
