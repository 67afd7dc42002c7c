"""Applying a mix draw (``MixParams``) to a batch: a deterministic function of (x, params).

SDMP (Ren et al., CVPR 2022, https://arxiv.org/abs/2206.07692) mixes image i of a batch with image B-1-i
of the same batch (the batch flipped along dim 0). Because the draw is separate from its application,
other implementations (the Triton kernel) are checked on the same draw.

Two blends: one per op named on the host (row-tiled, the fast path), and one for an op code drawn on the
device (``apply_mix`` chooses by the params' op). Both keep x unmodified and return an output with x's
shape, dtype, device and memory format: channels_last inputs are processed as NHWC rows, contiguous ones
as NCHW rows, other layouts are made contiguous first; bf16/fp16 inputs are blended in float32 and
rounded once on write.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sdmp_fast.mixing.params import OPS, MixParams, check_op, sample_mix_params

# Elements in one temporary row tile, per device type. The tiles only bound the temporaries: on CPU they
# are small (2 MiB), so they stay in cache and avoid the page faults a fresh full-size temporary costs;
# elsewhere one tile covers the whole batch (the fewest kernel launches). Results do not depend on it.
_TILE_ELEMS = {"cpu": 1 << 19}
_TILE_ELEMS_DEFAULT = 1 << 28


def apply_mix(x: Tensor, params: MixParams) -> tuple[Tensor, Tensor]:
    """Mix each x[i] with x[B-1-i] as ``params`` say; return (mixed, lam_eff [B] float32).

    Args:
        x: [B, C, H, W] float32/bf16/fp16 batch, contiguous or channels_last; left unmodified.
        params: from ``sample_mix_params`` for this batch size and image size; an op named on the host takes
            the row-tiled blend, an op code drawn on the device the one-select blend (equal results: exact
            for Mixup and CutMix, within float32 rounding for ResizeMix).
    """
    if not torch.is_tensor(params.op):
        check_op(params.op)
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating [B, C, H, W] tensor, got {x.dtype} {tuple(x.shape)}")
    if params.lam.shape != (x.shape[0],):
        raise ValueError(f"params are for a batch of shape {tuple(params.lam.shape)}, x has B={x.shape[0]}")
    if torch.is_tensor(params.op):
        return _apply_coded(x, params)
    return _apply_named(x, params)


def mix(x: Tensor, lam: Tensor, op: str | Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``apply_mix(x, sample_mix_params(lam, op, H, W, generator))``: (mixed, lam_eff [B] float32).

    ``op``: a name, or an op code on x's device (``sdmp_fast.mixing.op_code``).
    """
    params = sample_mix_params(lam.to(x.device), op, x.shape[-2], x.shape[-1], generator)
    return apply_mix(x, params)


def _apply_named(x: Tensor, params: MixParams) -> tuple[Tensor, Tensor]:
    """The row-tiled blend of one named op: no loop over samples and no host sync.

    Each tile of output rows is made for the whole batch at once. Source rows are fetched with
    ``index_select``, the partner folded into the row index, so the flipped batch is never materialised. A
    0/1 box mask built from broadcast aranges chooses own or partner pixels: ``torch.lerp`` with a 0/1 weight
    returns exactly one of its inputs for finite pixels and is vectorised on CPU, where ``torch.where`` is not.
    """
    B, C, H, W = x.shape
    lam_eff = params.lam_eff.to(x.device)
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if not nhwc:
        x = x.contiguous()
    out = torch.empty_like(x, memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    if x.numel() == 0:
        return out, lam_eff

    rows = _Rows(x, nhwc)
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    blend_tile, n_bufs = _BLENDS[params.op](rows, params, compute)
    if x.dtype != compute:
        n_bufs += 1                      # a float32 tile to round from
    tile_elems = _TILE_ELEMS.get(x.device.type, _TILE_ELEMS_DEFAULT)
    th = max(1, min(H, tile_elems // (B * C * W)))
    bufs = [torch.empty(math.prod(rows.tile_shape(th)), device=x.device, dtype=compute)
            for _ in range(n_bufs)]
    x_phys, out_phys = rows.physical(x), rows.physical(out)
    for ya in range(0, H, th):
        yb = min(H, ya + th)
        shape = rows.tile_shape(yb - ya)
        tiles = [buf[: math.prod(shape)].view(shape) for buf in bufs]
        x_tile, out_tile = rows.tile(x_phys, ya, yb), rows.tile(out_phys, ya, yb)
        if x.dtype == compute:
            blend_tile(ya, yb, x_tile, out_tile, tiles)
        else:
            blend_tile(ya, yb, x_tile.to(compute), tiles[-1], tiles[:-1])
            out_tile.copy_(tiles[-1])
    return out, lam_eff


def _source_coords(start: Tensor, size: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps i0, i1 ([B, n] int64) and the weight of i1 ([B, n] float32) per output position.

    Output position p of sample b lies at p - start[b] in a box of size[b] that holds the whole
    n-long source axis resized with align_corners=False. Positions outside the box get valid
    clamped taps; they are masked later. This is ``F.interpolate(partner[None], size=(h, w),
    mode="bilinear", align_corners=False)`` (no antialias) down to its float32 coordinate arithmetic, so
    ResizeMix agrees with it up to float32 rounding of the blend.
    """
    scale = torch.full_like(size, n, dtype=torch.float32) / size.clamp(min=1).to(torch.float32)
    local = torch.arange(n, device=start.device, dtype=torch.float64)[None, :] - start[:, None]
    # torch's kernels compute fma(scale, dst + 0.5, -0.5) in float32. The float64 product of a
    # float32 scale and a half-integer is exact, so one cast gives the same single rounding.
    src = (scale.to(torch.float64)[:, None] * (local + 0.5) - 0.5).to(torch.float32).clamp_(min=0.0)
    i0 = src.floor().to(torch.int64).clamp_(max=n - 1)
    weight = (src - i0).clamp_(0.0, 1.0)
    i1 = (i0 + 1).clamp_(max=n - 1)
    return i0, i1, weight


def _inside(start: Tensor, size: Tensor, n: int) -> Tensor:
    """[B, n] bool: position p of sample b lies in [start[b], start[b] + size[b])."""
    pos = torch.arange(n, device=start.device)[None, :]
    return (pos >= start[:, None]) & (pos < (start + size)[:, None])


class _Rows:
    """Row-tile views of a [B, C, H, W] batch in its physical layout.

    NHWC (channels_last): a row is one image row of W*C values, and a tile is [B, t, W, C].
    NCHW (contiguous): a row is one channel row of W values, and a tile is [B, C, t, W].
    Per-sample row and column vectors are shaped to broadcast against tiles with the long
    contiguous axis innermost, which keeps the elementwise kernels vectorised.
    """

    def __init__(self, x: Tensor, nhwc: bool):
        self.B, self.C, self.H, self.W = x.shape
        self.nhwc = nhwc
        self.device = x.device
        self.x_rows = self.physical(x).reshape(self.B * self.H * (1 if nhwc else self.C), -1)

    def physical(self, t: Tensor) -> Tensor:
        return t.permute(0, 2, 3, 1) if self.nhwc else t

    def tile(self, phys: Tensor, ya: int, yb: int) -> Tensor:
        return phys[:, ya:yb] if self.nhwc else phys[:, :, ya:yb]

    def tile_shape(self, t: int) -> tuple[int, ...]:
        return (self.B, t, self.W, self.C) if self.nhwc else (self.B, self.C, t, self.W)

    def mask_shape(self, t: int) -> tuple[int, ...]:
        """A box-mask tile; NCHW masks broadcast over the outer C axis."""
        return (self.B, t, self.W, self.C) if self.nhwc else (self.B, 1, t, self.W)

    def batch_grid(self) -> tuple[Tensor, Tensor, Tensor]:
        """[B, H] own sample index, partner sample index (B-1-b) and row index."""
        B, H = self.B, self.H
        own = torch.arange(B, device=self.device)[:, None].expand(B, H)
        row = torch.arange(H, device=self.device)[None, :].expand(B, H)
        return own, own.flip(0), row

    def box(self, params: MixParams) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        top, left, height, width = (t.to(self.device) for t in
                                    (params.top, params.left, params.height, params.width))
        return top, left, height, width

    def row_index(self, sample: Tensor, row: Tensor) -> Tensor:
        """[B, H] source (sample, row) per output row -> index into x_rows ([B, H] or [B, C, H])."""
        if self.nhwc:
            return sample * self.H + row
        chan = torch.arange(self.C, device=self.device)[None, :, None]
        return (sample[:, None, :] * self.C + chan) * self.H + row[:, None, :]

    def take_rows(self, index: Tensor, ya: int, yb: int, buf: Tensor) -> None:
        """buf <- the source rows that ``index`` names for output rows [ya, yb), in buf's dtype."""
        index = (index[:, ya:yb] if self.nhwc else index[:, :, ya:yb]).reshape(-1)
        flat = buf.view(index.shape[0], -1)
        if self.x_rows.dtype == buf.dtype:
            torch.index_select(self.x_rows, 0, index, out=flat)
        else:
            flat.copy_(torch.index_select(self.x_rows, 0, index))

    def per_row(self, v: Tensor) -> Tensor:
        """[B, t] -> broadcastable against a tile."""
        return v[:, :, None, None] if self.nhwc else v[:, None, :, None]

    def per_col(self, v: Tensor) -> Tensor:
        """[B, W] -> broadcastable against a tile; materialised over C for NHWC (see class doc)."""
        if self.nhwc:
            return v[:, None, :, None].expand(-1, -1, -1, self.C).contiguous()
        return v[:, None, None, :]

    def col_index(self, col: Tensor) -> Tensor:
        """Source column per output column [B, W] -> [B, 1, L] index for gathering on ``by_row``."""
        if self.nhwc:
            chan = torch.arange(self.C, device=self.device)
            return (col[:, :, None] * self.C + chan).reshape(self.B, 1, self.W * self.C)
        return col[:, None, :]

    def by_row(self, tile: Tensor) -> Tensor:
        """Tile -> [B, rows, L] view with the column axis (times C for NHWC) last."""
        return tile.view(self.B, -1, self.W * self.C if self.nhwc else self.W)


# A blend step gets (ya, yb, x tile, destination tile, scratch tiles) and fills the destination.
_Blend = Callable[[int, int, Tensor, Tensor, list], None]


def _mixup_blend(rows: _Rows, params: MixParams, compute: torch.dtype) -> tuple[_Blend, int]:
    _, partner, row = rows.batch_grid()
    index = rows.row_index(partner, row)
    lam = params.lam.to(device=rows.device, dtype=compute)[:, None, None, None]

    def blend(ya, yb, x_tile, dst, bufs):
        rows.take_rows(index, ya, yb, bufs[0])
        torch.lerp(bufs[0], x_tile, lam, out=dst)
    return blend, 1


def _cutmix_blend(rows: _Rows, params: MixParams, compute: torch.dtype) -> tuple[_Blend, int]:
    own, partner, row = rows.batch_grid()
    top, left, height, width = rows.box(params)
    # Rows outside the box fetch the sample's own row, so a column mask alone completes the box.
    index = rows.row_index(torch.where(_inside(top, height, rows.H), partner, own), row)
    in_cols = rows.per_col(_inside(left, width, rows.W).to(compute))

    def blend(ya, yb, x_tile, dst, bufs):
        rows.take_rows(index, ya, yb, bufs[0])
        torch.lerp(x_tile, bufs[0], in_cols, out=dst)
    return blend, 1


def _resizemix_blend(rows: _Rows, params: MixParams, compute: torch.dtype) -> tuple[_Blend, int]:
    """The whole partner resampled into the box: rows blended vertically, then the two horizontal taps
    gathered. The full grid is resampled and then masked, since the box extent is a device value (reading
    it to cut the work would sync)."""
    _, partner, _ = rows.batch_grid()
    top, left, height, width = rows.box(params)
    y0, y1, wy = _source_coords(top, height, rows.H)
    x0, x1, wx = _source_coords(left, width, rows.W)
    index0, index1 = rows.row_index(partner, y0), rows.row_index(partner, y1)
    col0, col1 = rows.col_index(x0), rows.col_index(x1)
    wy, wx = wy.to(compute), rows.per_col(wx.to(compute))
    in_rows = _inside(top, height, rows.H).to(compute)
    in_cols = rows.per_col(_inside(left, width, rows.W).to(compute))

    def blend(ya, yb, x_tile, dst, bufs):
        a, b, c = bufs
        rows.take_rows(index0, ya, yb, a)
        rows.take_rows(index1, ya, yb, b)
        a.lerp_(b, rows.per_row(wy[:, ya:yb]))                # vertical taps -> a
        a_rows = rows.by_row(a)
        torch.gather(a_rows, 2, col0.expand(a_rows.shape), out=rows.by_row(b))
        torch.gather(a_rows, 2, col1.expand(a_rows.shape), out=rows.by_row(c))
        b.lerp_(c, wx)                                        # horizontal taps -> b
        mask_shape = rows.mask_shape(yb - ya)
        mask = a.view(-1)[: math.prod(mask_shape)].view(mask_shape)    # a is free again
        torch.mul(rows.per_row(in_rows[:, ya:yb]), in_cols, out=mask)
        torch.lerp(x_tile, b, mask, out=dst)
    return blend, 3


_BLENDS = {"mixup": _mixup_blend, "cutmix": _cutmix_blend, "resizemix": _resizemix_blend}


def _apply_coded(x: Tensor, params: MixParams) -> tuple[Tensor, Tensor]:
    """One blend for all three ops, the op a device code: ``lerp(P, x, keep)``.

    P is the partner x[B-1-i] resampled bilinearly into the box for ResizeMix and taken as it is otherwise
    (an identity resampling: integer taps with weight 0, exact); ``keep`` is lam for Mixup and 0 inside / 1
    outside the box for CutMix and ResizeMix (lerp returns one input exactly at 0 and 1). Unlike the tiled
    blend it builds full-size temporaries: simple, and a captured graph replays it without host work.
    """
    B, C, H, W = x.shape
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xf = x.to(compute)
    partner = xf.flip(0)
    code = params.op
    is_resize = code == OPS.index("resizemix")
    full_h, full_w = torch.full_like(params.height, H), torch.full_like(params.width, W)
    zero = torch.zeros_like(params.top)
    y0, y1, wy = _source_coords(torch.where(is_resize, params.top, zero),
                                torch.where(is_resize, params.height, full_h), H)
    x0, x1, wx = _source_coords(torch.where(is_resize, params.left, zero),
                                torch.where(is_resize, params.width, full_w), W)

    def rows(i: Tensor) -> Tensor:
        return partner.gather(2, i[:, None, :, None].expand(B, C, H, W))

    p = torch.lerp(rows(y0), rows(y1), wy.to(compute)[:, None, :, None])
    p = torch.lerp(p.gather(3, x0[:, None, None, :].expand(B, C, H, W)),
                   p.gather(3, x1[:, None, None, :].expand(B, C, H, W)), wx.to(compute)[:, None, None, :])
    inside = (_inside(params.top, params.height, H)[:, None, :, None]
              & _inside(params.left, params.width, W)[:, None, None, :])
    keep = torch.where(code == OPS.index("mixup"), params.lam.to(compute)[:, None, None, None],
                       (~inside).to(compute))
    out = torch.lerp(p, xf, keep).to(x.dtype)
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format), params.lam_eff
