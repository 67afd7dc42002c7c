"""Backbones (registered in BACKBONES) and projection/prediction heads."""
from sdmp_fast.models import resnet, vit  # noqa: F401  (registration side effects)
from sdmp_fast.models.common import build_backbone  # noqa: F401
