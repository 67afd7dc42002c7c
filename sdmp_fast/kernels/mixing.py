"""Triton twin of :func:`sdmp_fast.mixing.apply_mix`: Mixup, CutMix and ResizeMix of a whole batch in one launch.

Same inputs as the reference (``x`` and the :class:`~sdmp_fast.mixing.MixParams` of ``sample_mix_params`` for
an op named on the host), same results up to float32 rounding of the blends. Grid (tiles of one sample's
H*W*C values, B): each program reads the sample and its partner B-1-i (any input strides, bf16/fp16/fp32,
converted to float32) and writes ``BLOCK`` consecutive values of the channels-last output in the requested
dtype (default: the input's). The op is a compile-time constant, so each op is its own specialisation.
Mixup and ResizeMix's bilinear taps use ``torch.lerp``'s formula, the box a select (the reference's lerp
with a 0/1 weight gives the same values); the partner is read only inside the box. ResizeMix resamples the
whole partner into the box with the reference's arithmetic: the float32 scale ``n / size`` and the source
coordinate ``scale * (p + 0.5) - 0.5`` are each one rounding of an exact float64 value (as torch's float32
fused multiply-add), the same clamped taps, rows blended before columns.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sdmp_fast.kernels import check_launchable, device_guard
from sdmp_fast.mixing import OPS, MixParams, sample_mix_params

OP_CODES = {op: code for code, op in enumerate(OPS)}  # mixup 0, cutmix 1, resizemix 2
BLOCK = 1024


@triton.jit
def _lerp(start, end, weight):
    """``torch.lerp``'s formula (two branches, so weight 0 and 1 return an end point exactly)."""
    return tl.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1.0 - weight))


@triton.jit
def _source_coords(pos, start, size, n):
    """Bilinear taps (i0, i1) and the weight of i1 for output positions ``pos`` of a box ``[start, start + size)``
    that holds the whole n-long source axis (``F.interpolate``, align_corners=False, as the torch reference)."""
    # float32 scale n / size, correctly rounded (a float64 quotient rounded once more is the float32 quotient);
    # then the source coordinate as one rounding of the exact float64 value, as torch's fused multiply-add
    scale = (tl.cast(n, tl.float64) / tl.maximum(size, 1).to(tl.float64)).to(tl.float32)
    src = (scale.to(tl.float64) * ((pos - start).to(tl.float64) + 0.5) - 0.5).to(tl.float32)
    src = tl.maximum(src, 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int32), n - 1)
    weight = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    i1 = tl.minimum(i0 + 1, n - 1)
    return i0, i1, weight


@triton.jit
def mix_kernel(x_ptr, out_ptr, lam_ptr, top_ptr, left_ptr, height_ptr, width_ptr,
                B, C, H, W, sxb, sxc, sxh, sxw,
                OP: tl.constexpr, BLOCK: tl.constexpr):
    """out[b] (channels-last) = mix of x[b] and x[B-1-b]; grid (cdiv(H * W * C, BLOCK), B)."""
    b = tl.program_id(1)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (y, x, c) of the channels-last output, flattened
    n = H * W * C
    live = idx < n
    pix = idx // C
    c = idx - pix * C
    y = pix // W
    xc = pix - y * W
    own_ptr = x_ptr + b.to(tl.int64) * sxb + c * sxc
    part_ptr = x_ptr + (B - 1 - b).to(tl.int64) * sxb + c * sxc
    own = tl.load(own_ptr + y * sxh + xc * sxw, mask=live, other=0.0).to(tl.float32)
    if OP == 0:  # mixup: torch.lerp(partner, own, lam)
        lam = tl.load(lam_ptr + b)
        part = tl.load(part_ptr + y * sxh + xc * sxw, mask=live, other=0.0).to(tl.float32)
        out = _lerp(part, own, lam)
    else:
        top = tl.load(top_ptr + b).to(tl.int32)
        left = tl.load(left_ptr + b).to(tl.int32)
        height = tl.load(height_ptr + b).to(tl.int32)
        width = tl.load(width_ptr + b).to(tl.int32)
        inside = (y >= top) & (y < top + height) & (xc >= left) & (xc < left + width)
        take = live & inside  # the partner is read only inside the box
        if OP == 1:  # cutmix: the partner's pixel at the same place
            part = tl.load(part_ptr + y * sxh + xc * sxw, mask=take, other=0.0).to(tl.float32)
        else:  # resizemix: the whole partner resampled into the box, rows blended first as the reference
            y0, y1, wy = _source_coords(y, top, height, H)
            x0, x1, wx = _source_coords(xc, left, width, W)
            p00 = tl.load(part_ptr + y0 * sxh + x0 * sxw, mask=take, other=0.0).to(tl.float32)
            p10 = tl.load(part_ptr + y1 * sxh + x0 * sxw, mask=take, other=0.0).to(tl.float32)
            p01 = tl.load(part_ptr + y0 * sxh + x1 * sxw, mask=take, other=0.0).to(tl.float32)
            p11 = tl.load(part_ptr + y1 * sxh + x1 * sxw, mask=take, other=0.0).to(tl.float32)
            part = _lerp(_lerp(p00, p10, wy), _lerp(p01, p11, wy), wx)
        out = tl.where(inside, part, own)
    tl.store(out_ptr + b.to(tl.int64) * n + idx, out.to(out_ptr.dtype.element_ty), mask=live)


def apply_mix(x: Tensor, params: MixParams, out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Mix each x[i] with x[B-1-i] as ``params`` say; return (mixed, lam_eff [B] float32).

    Args:
        x: [B, C, H, W] float32/bf16/fp16 batch, any strides (contiguous, channels_last); left unmodified.
        params: from ``sample_mix_params`` for this batch size and image size.
        out_dtype: dtype of ``mixed`` (default x's); ``mixed`` is always channels_last.
    """
    if torch.is_tensor(params.op):  # one specialisation per op: the op must be known when launching
        raise ValueError("the Triton mixing kernel takes an op named on the host; params with a device op code "
                         "(run.cuda_graph) go to sdmp_fast.mixing.apply_mix")
    if params.op not in OP_CODES:
        raise ValueError(f"unknown mixing op {params.op!r}; expected one of {', '.join(OPS)}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating [B, C, H, W] tensor, got {x.dtype} {tuple(x.shape)}")
    B, C, H, W = x.shape
    if params.lam.shape != (B,):
        raise ValueError(f"params are for a batch of shape {tuple(params.lam.shape)}, x has B={B}")
    check_launchable(x, "sdmp.impl")
    out = torch.empty((B, C, H, W), device=x.device, dtype=out_dtype or x.dtype, memory_format=torch.channels_last)
    lam_eff = params.lam_eff.to(x.device)
    if x.numel() == 0:
        return out, lam_eff
    dev = x.device
    lam = params.lam.to(device=dev, dtype=torch.float32)
    box = [t.to(dev) for t in (params.top, params.left, params.height, params.width)]
    grid = (triton.cdiv(H * W * C, BLOCK), B)
    with device_guard(x):
        mix_kernel[grid](x, out, lam, *box, B, C, H, W, *x.stride(), OP=OP_CODES[params.op], BLOCK=BLOCK)
    return out, lam_eff


def mix(x: Tensor, lam: Tensor, op: str, generator: torch.Generator | None = None,
        out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """``apply_mix(x, sample_mix_params(lam, op, H, W, generator))``, as :func:`sdmp_fast.mixing.mix`."""
    params = sample_mix_params(lam.to(x.device), op, x.shape[-2], x.shape[-1], generator)
    return apply_mix(x, params, out_dtype)
