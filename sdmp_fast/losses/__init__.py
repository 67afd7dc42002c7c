"""Losses as pure functions: InfoNCE (MoCo v3), DINO, and the SDMP terms of both."""
from .dino import dino_loss, dino_sdmp_terms, student_log_probs, teacher_probs, update_center  # noqa: F401
from .sdmp import infonce_loss, moco_sdmp_loss  # noqa: F401
