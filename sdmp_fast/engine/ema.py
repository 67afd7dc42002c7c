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
    """teacher <- teacher + weight * (student - teacher) with ``weight`` (= 1 - momentum) a 0-dim device tensor.

    Written as three multi-tensor ops with the device scalar (``_foreach_mul_``'s Tensor overload): the
    scalar-tensor overload of ``_foreach_lerp_`` would read the weight on the host (``.item()``, a sync), and
    its TensorList overload with 0-dim weights falls back to one kernel per parameter on CUDA. A weight of 0
    leaves the teacher unchanged.
    """
    delta = torch._foreach_sub(student, teacher)
    torch._foreach_mul_(delta, weight)
    torch._foreach_add_(teacher, delta)
