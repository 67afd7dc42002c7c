"""Backbones (registered in BACKBONES) and projection/prediction heads."""
from . import resnet, vit  # noqa: F401  (registration side effects)
from .common import build_backbone  # noqa: F401
