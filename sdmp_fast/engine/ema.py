"""Teacher / momentum-encoder update: teacher <- m * teacher + (1 - m) * student, in one foreach call."""
from __future__ import annotations

import torch


@torch.no_grad()
def ema_update(teacher: list[torch.Tensor], student: list[torch.Tensor], momentum: float) -> None:
    """``lerp`` towards the student with weight 1 - momentum (floats: no device sync)."""
    if momentum >= 1.0:
        return
    torch._foreach_lerp_(teacher, student, 1.0 - float(momentum))
