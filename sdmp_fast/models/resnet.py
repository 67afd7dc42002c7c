"""ResNets from timm (torchvision-style architecture), pooled 2048-d features: ResNet-50 for ImageNet, and
CIFAR-style ResNet-50/101 (SDMP Table 5) with a 3x3 stride-1 stem convolution and no max-pool.

Their BatchNorm layers are ``ChunkedSyncBatchNorm`` (``models.norm``): synchronised over ranks, with
statistics per view chunk, as MoCo v3's ResNet recipe (SyncBN, one forward per view) has them.

The CIFAR variants are also registered with timm (``resnet50_cifar``, ``resnet101_cifar``), so an export
rebuilds with ``timm.create_model(name, **kwargs)`` once ``sdmp_fast.models`` is imported, as for the other
backbones. Their stem keeps the 32 px input at full resolution into ``layer1`` (4 x 4 maps after ``layer4``),
where the ImageNet stem (7x7 stride-2 conv and a stride-2 max-pool) would reduce it to 8 px.
"""
from __future__ import annotations

from timm.models import register_model
from timm.models.resnet import resnet50 as timm_resnet50
from timm.models.resnet import resnet101 as timm_resnet101
from torch import nn

from sdmp_fast.registry import BACKBONES

from sdmp_fast.models.common import BackboneSpec, create_timm
from sdmp_fast.models.norm import convert_batchnorm


def cifar_stem(model: nn.Module) -> nn.Module:
    """Replace a timm ResNet's stem by the CIFAR one: 3x3 stride-1 convolution (same width), no max-pool."""
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet conv init
    model.maxpool = nn.Identity()
    return model


def _no_weights(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name}: no pretrained weights exist for this architecture")


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    """timm ResNet-50 with the CIFAR stem (``cifar_stem``)."""
    _no_weights("resnet50_cifar", pretrained)
    return cifar_stem(timm_resnet50(pretrained=False, **kwargs))


@register_model
def resnet101_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    """timm ResNet-101 with the CIFAR stem (``cifar_stem``)."""
    _no_weights("resnet101_cifar", pretrained)
    return cifar_stem(timm_resnet101(pretrained=False, **kwargs))


def _backbone(timm_name: str, drop_path: float) -> nn.Module:
    return convert_batchnorm(create_timm(BackboneSpec(timm_name, dict(num_classes=0, drop_path_rate=drop_path))))


@BACKBONES.register("resnet50", help="ResNet-50 (timm), 2048-d pooled features; MoCo v3's ResNet recipe")
def resnet50(img_size: int = 224, drop_path: float = 0.0) -> nn.Module:
    return _backbone("resnet50", drop_path)


@BACKBONES.register("resnet50_cifar", help="ResNet-50, CIFAR stem (3x3 stride-1 conv, no max-pool), 2048-d; Table 5")
def build_resnet50_cifar(img_size: int = 32, drop_path: float = 0.0) -> nn.Module:
    return _backbone("resnet50_cifar", drop_path)


@BACKBONES.register("resnet101_cifar", help="ResNet-101, CIFAR stem (3x3 stride-1 conv, no max-pool), 2048-d; Table 5")
def build_resnet101_cifar(img_size: int = 32, drop_path: float = 0.0) -> nn.Module:
    return _backbone("resnet101_cifar", drop_path)
