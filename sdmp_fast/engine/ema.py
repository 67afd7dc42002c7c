"""Teacher / momentum-encoder update: teacher <- m * teacher + (1 - m) * student, in one foreach call
(``ema_update``: m a host float; ``ema_lerp_``: 1 - m a device tensor, for the sync-free step)."""
from __future__ import annotations

import torch


@torch.no_grad()
def ema_update(teacher: list[torch.Tensor], student: list[torch.Tensor], momentum: float) -> None:
    """``lerp`` towards the student with weight 1 - momentum (floats: no device sync)."""
    if momentum >= 1.0:
        return
    torch._foreach_lerp_(teacher, student, 1.0 - float(momentum))


@torch.no_grad()
def ema_lerp_(teacher: list[torch.Tensor], student: list[torch.Tensor], weight: torch.Tensor) -> None:
    """teacher <- lerp(teacher, student, weight) with ``weight`` (= 1 - momentum) a 0-dim device tensor.

    The TensorList overload of ``_foreach_lerp_`` takes the weight as a device value; the scalar-tensor
    overload would read it on the host (``.item()``), a sync. A weight of 0 leaves the teacher unchanged.
    """
    torch._foreach_lerp_(teacher, student, [weight] * len(teacher))
