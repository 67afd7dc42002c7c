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


def adopt_frozen(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Copy into ``model``'s frozen parameters (``requires_grad`` False: MoCo v3's sin-cos table and patch projection)
    their values in ``state_dict``, a trained copy of the same backbone.

    A frozen parameter never leaves its initial value (the EMA of two equal values is that value), so the trained
    copy holds the run's own initialisation of it; a rebuild may not (the sin-cos table's channel order changed in
    2026-12: runs before it keep theirs). Used for the random-init twin of a trained backbone.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad and name in state_dict and state_dict[name].shape == p.shape:
                p.copy_(state_dict[name])
    return model


def backbone_kwargs(name: str, image_size: int, drop_path: float, pos_resample: str) -> dict[str, Any]:
    """The registry builder's kwargs for backbone ``name``: ``pos_resample`` goes to the variable-size ViTs only
    (registry ``meta={"dynamic": True}``), which are the ones that resample a position table."""
    kw: dict[str, Any] = dict(img_size=image_size, drop_path=drop_path)
    if (BACKBONES.meta(name) or {}).get("dynamic"):
        kw["pos_resample"] = pos_resample
    return kw


def build_backbone(cfg) -> nn.Module:
    """Build ``model.backbone`` for ``data.image_size`` (the only place that reads the model config)."""
    check_backbone(cfg)
    model = BACKBONES.build(cfg.model.backbone, **backbone_kwargs(cfg.model.backbone, cfg.data.image_size,
                                                                  cfg.model.drop_path, cfg.model.pos_resample))
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
