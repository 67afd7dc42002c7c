"""Losses as pure functions: InfoNCE (MoCo v3) and the SDMP terms."""
from .sdmp import infonce_loss, moco_sdmp_loss  # noqa: F401
