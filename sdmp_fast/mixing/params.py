"""The random part of a mix: lambda ~ Beta(alpha, alpha) and the per-sample boxes, drawn on the device.

See ``sdmp_fast/mixing/blend.py`` for the box policy and how a draw is applied.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OPS = ("mixup", "cutmix", "resizemix")


@dataclass(frozen=True)
class MixParams:
    """Everything random about one batch mix; ``apply_mix`` is a pure function of (x, params).

    Args:
        op: "mixup", "cutmix" or "resizemix"; or, from ``sample_selected_mix_params``, the op's code in
            ``OPS`` as a 0-dim int64 device tensor.
        lam: [B] float32, the requested own-fraction (clamped to [0, 1]).
        top, left, height, width: [B] int64, the box of each sample (zeros for mixup).
        lam_eff: [B] float32, the fraction of mixed[i]'s pixels that come from x[i].
    """

    op: str | Tensor
    lam: Tensor
    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    lam_eff: Tensor


def check_op(op: str) -> None:
    if torch.is_tensor(op):
        raise ValueError("these params carry the op as a device code (sample_selected_mix_params): use apply_selected_mix")
    if op not in OPS:
        raise ValueError(f"unknown mixing op {op!r}; expected one of {', '.join(OPS)}")


def sample_lam(batch: int, alpha: float, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """Draw [batch] float32 lam ~ Beta(alpha, alpha) on the device (default: the generator's)."""
    if not alpha > 0:
        raise ValueError(f"Beta alpha must be > 0, got {alpha}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if alpha == 1.0:
        return torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
    concentration = torch.full((batch, 2), float(alpha), device=device, dtype=torch.float32)
    return torch._sample_dirichlet(concentration, generator=generator)[:, 0]


def sample_mix_params(lam: Tensor, op: str, H: int, W: int,
                      generator: torch.Generator | None = None) -> MixParams:
    """Draw the per-sample boxes of ``op`` on lam's device (no host sync).

    Args:
        lam: [B] target own-fraction of each mixed image, in [0, 1].
        op: "mixup", "cutmix" or "resizemix".
        H, W: image size in pixels.
        generator: torch.Generator on lam's device, or None for the default one.
    """
    check_op(op)
    if lam.dim() != 1:
        raise ValueError(f"lam must have shape [B], got {tuple(lam.shape)}")
    if H < 1 or W < 1:
        raise ValueError(f"image size must be positive, got {H}x{W}")
    device = lam.device
    lam32 = lam.detach().to(torch.float32).clamp(0.0, 1.0)
    B = lam32.shape[0]
    if op == "mixup":
        zeros = torch.zeros(B, dtype=torch.int64, device=device)
        return MixParams(op, lam32, zeros, zeros, zeros, zeros, lam32.clone())

    # float64, so floor(H * sqrt(1 - keep)) equals Python's int() on the same float32 lam.
    lam64 = lam32.to(torch.float64)
    keep = lam64 if op == "cutmix" else lam64 * 0.8 + 0.1
    side = torch.sqrt(1.0 - keep)
    height = torch.floor(side * H).to(torch.int64).clamp_(0, H)
    width = torch.floor(side * W).to(torch.int64).clamp_(0, W)
    u = torch.rand(2, B, generator=generator, device=device, dtype=torch.float64)
    top = torch.minimum(torch.floor(u[0] * (H - height + 1)).to(torch.int64), H - height)
    left = torch.minimum(torch.floor(u[1] * (W - width + 1)).to(torch.int64), W - width)
    lam_eff = (1.0 - (height * width).to(torch.float64) / (H * W)).to(torch.float32)
    return MixParams(op, lam32, top, left, height, width, lam_eff)


def sample_selected_mix_params(lam: Tensor, op_index: Tensor, ops: tuple[str, ...], H: int, W: int,
                               generator: torch.Generator | None = None) -> MixParams:
    """The params of ``ops[op_index]`` with ``op_index`` a 0-dim int64 tensor on lam's device (no host sync).

    The op is a device value here (a captured CUDA graph cannot branch on the host): ``MixParams.op`` holds
    the op's code, a 0-dim int64 tensor, its position in ``OPS`` (0 mixup, 1 cutmix, 2 resizemix); the box
    is zero for mixup. Such params go to ``apply_selected_mix``.

    The same random numbers are drawn whatever the op (the box positions, unused by mixup), so a
    replayed graph consumes a fixed amount of its generator per step. Box sizes, positions and lam_eff
    follow ``sample_mix_params`` exactly for the selected op.
    """
    for op in ops:
        check_op(op)
    if lam.dim() != 1:
        raise ValueError(f"lam must have shape [B], got {tuple(lam.shape)}")
    device = lam.device
    lam32 = lam.detach().to(torch.float32).clamp(0.0, 1.0)
    B = lam32.shape[0]
    # the op's code by arithmetic on the device: no host read of op_index, and no host-to-device copy (a
    # table made with torch.tensor would be one, which a CUDA graph capture forbids)
    op_index = op_index.to(device)
    code = torch.zeros((), dtype=torch.int64, device=device)
    for j, op in enumerate(ops):
        code = torch.where(op_index == j, OPS.index(op), code)
    is_mixup, is_cutmix = code == 0, code == 1
    lam64 = lam32.to(torch.float64)
    keep = torch.where(is_cutmix, lam64, lam64 * 0.8 + 0.1)
    side = torch.sqrt(1.0 - keep)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    height = torch.where(is_mixup, zero, torch.floor(side * H).to(torch.int64).clamp_(0, H))
    width = torch.where(is_mixup, zero, torch.floor(side * W).to(torch.int64).clamp_(0, W))
    u = torch.rand(2, B, generator=generator, device=device, dtype=torch.float64)
    top = torch.minimum(torch.floor(u[0] * (H - height + 1)).to(torch.int64), H - height)
    left = torch.minimum(torch.floor(u[1] * (W - width + 1)).to(torch.int64), W - width)
    top, left = torch.where(is_mixup, zero, top), torch.where(is_mixup, zero, left)
    box_eff = (1.0 - (height * width).to(torch.float64) / (H * W)).to(torch.float32)
    return MixParams(code, lam32, top, left, height, width, torch.where(is_mixup, lam32, box_eff))
