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


def check_backbone(cfg) -> None:
    """``model.backbone`` is registered, and the view sizes it sees are multiples of its patch size (the registry's
    ``meta={"patch": P}``), which would otherwise drop the last rows and columns of every image unseen."""
    name = cfg.model.backbone
    if name not in BACKBONES:
        raise ConfigError(f"model.backbone = {name!r}: choose one of {', '.join(BACKBONES.names())}")
    patch = (BACKBONES.meta(name) or {}).get("patch")
    sizes = {"data.image_size": cfg.data.image_size}
    if cfg.method.name == "dino" and cfg.data.local_crops:
        sizes["data.local_size"] = cfg.data.local_size
    for key, size in sizes.items():
        if patch and size % patch:
            lo = size - size % patch
            raise ConfigError(f"{key} = {size} is not a multiple of the patch size {patch} of model.backbone {name} "
                              f"(its last {size % patch} pixel rows and columns would never be seen): use "
                              f"{lo or patch} or {lo + patch}")


def build_backbone(cfg) -> nn.Module:
    """Build ``model.backbone`` for ``data.image_size`` (the only place that reads the model config)."""
    check_backbone(cfg)
    model = BACKBONES.build(cfg.model.backbone, img_size=cfg.data.image_size, drop_path=cfg.model.drop_path)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
