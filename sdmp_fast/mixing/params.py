"""The random part of a mix, drawn on the device: lam ~ Beta(alpha, alpha) and the per-sample boxes.

Box policy (docs/method.md, SDMP for MoCo v3): CutMix and ResizeMix boxes lie fully inside the image, top
uniform over the H-h+1 valid rows and left over the W-w+1 valid columns (the SDMP code's ResizeMix rule,
applied to CutMix too). The box area then depends on lam only, so two views mixed with one lam get the
same lam_eff.

* CutMix: ``h = int(H * sqrt(1 - lam))``, ``w = int(W * sqrt(1 - lam))``.
* ResizeMix: ``tau = 0.8 * lam + 0.1`` (the SDMP code), ``h = int(H * sqrt(1 - tau))``, w likewise, so
  lam_eff stays in about [0.1, 0.9].
* ``lam_eff = 1 - h * w / (H * W)``, the fraction of pixels really kept from x[i]; Mixup's is lam.
* lam is clamped to [0, 1]: it is a fraction, and sqrt(1 - lam) is undefined above 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OPS = ("mixup", "cutmix", "resizemix")  # an op's position here is its device code


@dataclass(frozen=True)
class MixParams:
    """Everything random about one batch mix; ``apply_mix`` is a pure function of (x, params).

    Args:
        op: "mixup", "cutmix" or "resizemix"; or the op's code in ``OPS`` as a 0-dim int64 device tensor
            (an op drawn on the device, see ``op_code``).
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
    if op not in OPS:
        raise ValueError(f"unknown mixing op {op!r}; expected one of {', '.join(OPS)}")


def op_code(index: Tensor, ops: tuple[str, ...]) -> Tensor:
    """The ``OPS`` code of ``ops[index]`` for a 0-dim int64 device ``index``, computed on its device.

    Arithmetic with selects, no table: reading ``index`` on the host would sync, and a table made with
    ``torch.tensor`` would be a host-to-device copy, which a CUDA graph capture forbids.
    """
    for op in ops:
        check_op(op)
    code = torch.zeros((), dtype=torch.int64, device=index.device)
    for j, op in enumerate(ops):
        code = torch.where(index == j, OPS.index(op), code)
    return code


def sample_lam(batch: int, alpha: float, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """Draw [batch] float32 lam ~ Beta(alpha, alpha) on the device (default: the generator's).

    alpha = 1 (SDMP's) is an exact ``torch.rand`` uniform. Other alphas take the first coordinate of a
    Dirichlet(alpha, alpha) sample: the sampler behind ``torch.distributions.Beta``, called directly so
    that it takes a generator; it runs on the device without a host sync and clamps to [tiny, 1 - eps],
    so small alphas give no NaN.
    """
    if not alpha > 0:
        raise ValueError(f"Beta alpha must be > 0, got {alpha}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if alpha == 1.0:
        return torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
    concentration = torch.full((batch, 2), float(alpha), device=device, dtype=torch.float32)
    return torch._sample_dirichlet(concentration, generator=generator)[:, 0]


def _boxes(keep: Tensor, H: int, W: int, generator: torch.Generator | None) -> tuple[Tensor, ...]:
    """(top, left, height, width, lam_eff) of boxes whose area leaves ``keep`` [B] float64 of the image.

    float64, so that ``floor(H * sqrt(1 - keep))`` equals Python's ``int(H * math.sqrt(1 - keep))`` on the
    same float32 lam: keep = 1 gives 0 and keep = 0 gives H. Draws one ``torch.rand(2, B)`` (the positions).
    """
    side = torch.sqrt(1.0 - keep)
    height = torch.floor(side * H).to(torch.int64).clamp_(0, H)
    width = torch.floor(side * W).to(torch.int64).clamp_(0, W)
    u = torch.rand(2, keep.shape[0], generator=generator, device=keep.device, dtype=torch.float64)
    top = torch.minimum(torch.floor(u[0] * (H - height + 1)).to(torch.int64), H - height)
    left = torch.minimum(torch.floor(u[1] * (W - width + 1)).to(torch.int64), W - width)
    lam_eff = (1.0 - (height * width).to(torch.float64) / (H * W)).to(torch.float32)
    return top, left, height, width, lam_eff


def sample_mix_params(lam: Tensor, op: str | Tensor, H: int, W: int,
                      generator: torch.Generator | None = None) -> MixParams:
    """Draw the per-sample boxes of ``op`` on lam's device (no host sync).

    Args:
        lam: [B] target own-fraction of each mixed image, in [0, 1].
        op: "mixup", "cutmix" or "resizemix"; or an op code from ``op_code`` (a 0-dim int64 tensor on lam's
            device). A named mixup draws nothing; a code draws the box positions whatever the op, so a
            replayed CUDA graph consumes a fixed amount of its generator per step (mixup's box is zeroed).
        H, W: image size in pixels.
        generator: torch.Generator on lam's device, or None for the default one.
    """
    if not torch.is_tensor(op):
        check_op(op)
    if lam.dim() != 1:
        raise ValueError(f"lam must have shape [B], got {tuple(lam.shape)}")
    if H < 1 or W < 1:
        raise ValueError(f"image size must be positive, got {H}x{W}")
    lam32 = lam.detach().to(torch.float32).clamp(0.0, 1.0)
    lam64 = lam32.to(torch.float64)
    if not torch.is_tensor(op):
        if op == "mixup":
            zeros = torch.zeros(lam32.shape[0], dtype=torch.int64, device=lam32.device)
            return MixParams(op, lam32, zeros, zeros, zeros, zeros, lam32.clone())
        keep = lam64 if op == "cutmix" else lam64 * 0.8 + 0.1
        return MixParams(op, lam32, *_boxes(keep, H, W, generator))
    op = op.to(lam32.device)
    is_mixup = op == OPS.index("mixup")
    keep = torch.where(op == OPS.index("cutmix"), lam64, lam64 * 0.8 + 0.1)
    top, left, height, width, lam_eff = _boxes(keep, H, W, generator)
    zero = torch.zeros((), dtype=torch.int64, device=lam32.device)
    top, left, height, width = (torch.where(is_mixup, zero, t) for t in (top, left, height, width))
    return MixParams(op, lam32, top, left, height, width, torch.where(is_mixup, lam32, lam_eff))
