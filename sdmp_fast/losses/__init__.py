"""Losses as pure functions: InfoNCE (MoCo v3), DINO, and the SDMP terms of both."""
from sdmp_fast.losses.dino import dino_loss, dino_sdmp_terms, student_log_probs, teacher_probs, update_center  # noqa: F401
from sdmp_fast.losses.sdmp import infonce_loss, moco_sdmp_loss  # noqa: F401
