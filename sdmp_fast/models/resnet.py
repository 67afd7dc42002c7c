"""ResNet-50 from timm (torchvision-style architecture), pooled 2048-d features.

Its BatchNorm layers are ``ChunkedSyncBatchNorm`` (``models.norm``): synchronised over ranks, with
statistics per view chunk, as MoCo v3's ResNet recipe (SyncBN, one forward per view) has them.
"""
from __future__ import annotations

from torch import nn

from sdmp_fast.registry import BACKBONES

from .common import BackboneSpec, create_timm
from .norm import convert_batchnorm


@BACKBONES.register("resnet50", help="ResNet-50 (timm), 2048-d pooled features; MoCo v3's ResNet recipe")
def resnet50(img_size: int = 224, drop_path: float = 0.0) -> nn.Module:
    return convert_batchnorm(create_timm(BackboneSpec("resnet50", dict(num_classes=0, drop_path_rate=drop_path))))
