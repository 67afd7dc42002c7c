"""The Triton device code of :mod:`sdmp_fast.kernels.augment` (the passes, their layout and parameters are
described there): pointwise helpers and the four kernels, crop, colour, blur rows and blur columns."""
from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 256  # output pixels per program (times 3 channels)

# ----------------------------------------------------------------------------------------------- pointwise helpers


@triton.jit
def _clamp01(x):
    return tl.minimum(tl.maximum(x, 0.0), 1.0)


@triton.jit
def _luma(r, g, b):
    return r * 0.2989 + g * 0.587 + b * 0.114  # augment.GRAY_WEIGHTS, same order of operations


@triton.jit
def _rem6(a):
    """``torch.remainder(a, 6.0)``: fmod, moved into [0, 6)."""
    m = a % 6.0
    return tl.where(m < 0.0, m + 6.0, m)


@triton.jit
def _hue_channel(vmax, chroma, h6, n: tl.constexpr):
    k = _rem6(n + h6)
    return _clamp01(vmax - chroma * _clamp01(tl.minimum(k, 4.0 - k)))


@triton.jit
def _hue_shift(r, g, b, shift):
    """augment._hue_shift: HSV hue of every pixel shifted by ``shift`` turns."""
    vmax = tl.maximum(tl.maximum(r, g), b)
    chroma = vmax - tl.minimum(tl.minimum(r, g), b)
    cdiv = tl.where(chroma > 0.0, chroma, 1.0)
    h6 = tl.where(vmax == r, (g - b) / cdiv, tl.where(vmax == g, (b - r) / cdiv + 2.0, (r - g) / cdiv + 4.0))
    h6 = _rem6(h6 + 6.0 * shift)
    return _hue_channel(vmax, chroma, h6, 5.0), _hue_channel(vmax, chroma, h6, 3.0), _hue_channel(vmax, chroma, h6, 1.0)


@triton.jit
def _blend(x, other, f):
    return _clamp01(x * f + other * (1.0 - f))


@triton.jit
def _colour_tail(r, g, b, fac_ptr, flag_ptr, n, N, SAT: tl.constexpr, HUE: tl.constexpr, GRAY: tl.constexpr):
    """Saturation -> hue -> grayscale (everything of the colour stage after contrast)."""
    if SAT:
        f = tl.load(fac_ptr + 2 * N + n)
        l = _luma(r, g, b)
        r, g, b = _blend(r, l, f), _blend(g, l, f), _blend(b, l, f)
    if HUE:
        shift = tl.load(fac_ptr + 3 * N + n)
        hr, hg, hb = _hue_shift(r, g, b, shift)
        on = shift != 0.0  # hue 0: untouched, as torchvision
        r, g, b = tl.where(on, hr, r), tl.where(on, hg, g), tl.where(on, hb, b)
    if GRAY:
        on = tl.load(flag_ptr + N + n) != 0
        l = _luma(r, g, b)
        r, g, b = tl.where(on, l, r), tl.where(on, l, g), tl.where(on, l, b)
    return r, g, b


@triton.jit
def _finish(r, g, b, flag_ptr, n, N, thr, m0, m1, m2, s0, s1, s2, SOL: tl.constexpr):
    """Solarize, then normalise."""
    if SOL:
        on = tl.load(flag_ptr + 2 * N + n) != 0
        r = tl.where(on & (r >= thr), 1.0 - r, r)
        g = tl.where(on & (g >= thr), 1.0 - g, g)
        b = tl.where(on & (b >= thr), 1.0 - b, b)
    return (r - m0) / s0, (g - m1) / s1, (b - m2) / s2


@triton.jit
def _load_rgb(ptr, n, pix, live, S: tl.constexpr):
    p = ptr + n.to(tl.int64) * (S * S * 3) + pix * 3
    return (tl.load(p, mask=live, other=0.0).to(tl.float32), tl.load(p + 1, mask=live, other=0.0).to(tl.float32),
            tl.load(p + 2, mask=live, other=0.0).to(tl.float32))


@triton.jit
def _store_rgb(ptr, n, pix, live, r, g, b, S: tl.constexpr):
    """Store [S, S, 3] (channels-last) values in ptr's dtype (the only rounding of a bf16/fp16 output)."""
    p = ptr + n.to(tl.int64) * (S * S * 3) + pix * 3
    ty = ptr.dtype.element_ty
    tl.store(p, r.to(ty), mask=live)
    tl.store(p + 1, g.to(ty), mask=live)
    tl.store(p + 2, b.to(ty), mask=live)


@triton.jit
def _filter(d, CUBIC: tl.constexpr):
    """augment._filter at distances ``d >= 0`` in filter units: the triangle, or the cubic with a = -0.5."""
    if CUBIC:
        near = (1.5 * d - 2.5) * d * d + 1.0
        far = ((-0.5 * d + 2.5) * d - 4.0) * d + 2.0
        return tl.where(d < 1.0, near, tl.where(d < 2.0, far, 0.0))
    else:
        return tl.maximum(1.0 - d, 0.0)


@triton.jit
def _reach(stretch, CUBIC: tl.constexpr):
    """How far the stretched filter reaches on each side, in input pixels: its support (1, cubic 2) x stretch."""
    if CUBIC:
        return 2.0 * stretch
    else:
        return stretch


@triton.jit
def _tap_weight(pos, center, stretch, end, CUBIC: tl.constexpr):
    """augment._aa_weights' filter at integer positions ``pos`` (pixel centres pos + 0.5), cut at ``end``."""
    return tl.where(pos < end, _filter(tl.abs(pos.to(tl.float32) + 0.5 - center) / stretch, CUBIC), 0.0)


@triton.jit
def _row_pass(wx, p, ok, CUBIC: tl.constexpr):
    """One row's horizontal resampling of the [BLOCK, KX] taps at ``p``; clipped to [0, 255] for the cubic."""
    h = tl.sum(wx * tl.load(p, mask=ok, other=0).to(tl.float32), axis=1)
    if CUBIC:
        h = tl.minimum(tl.maximum(h, 0.0), 255.0)
    return h


@triton.jit
def _gauss_taps(fac_ptr, n, N, HALF):
    """Per-sample Gaussian: (sigma or 1, half width, sum of the taps); half 0 (one tap of weight 1) without blur."""
    sigma = tl.load(fac_ptr + 4 * N + n)
    on = sigma > 0.0
    safe = tl.where(on, sigma, 1.0)
    half = tl.where(on, tl.minimum(tl.ceil(3.0 * safe).to(tl.int32), HALF), 0)
    total = safe * 0.0  # a float32 scalar, loop-carried
    t = -half
    while t <= half:  # a runtime bound: `while`, see crop_kernel
        q = tl.cast(t, tl.float32) / safe
        total += tl.exp(-0.5 * (q * q))
        t += 1
    return safe, half, total


# ----------------------------------------------------------------------------------------------- kernels


@triton.jit
def crop_kernel(img_ptr, box_ptr, fac_ptr, flag_ptr, dst_ptr, part_ptr,
                 N, B, sib, sic, sih, siw, thr, m0, m1, m2, s0, s1, s2,
                 S: tl.constexpr, BLOCK: tl.constexpr, KX: tl.constexpr, CUBIC: tl.constexpr,
                 BRIGHT: tl.constexpr, CONTRAST: tl.constexpr, SAT: tl.constexpr, HUE: tl.constexpr,
                 GRAY: tl.constexpr, FINISH: tl.constexpr, SOL: tl.constexpr):
    """Pass 1: crop + antialiased resize (bilinear, or bicubic with CUBIC) + flip + brightness (+ the rest of the
    colour stage without contrast, + solarize/normalise/cast without blur). Grid (cdiv(S * S, BLOCK), N); KX
    bounds the column taps."""
    n = tl.program_id(1)
    tile = tl.program_id(0)
    pix = tile * BLOCK + tl.arange(0, BLOCK)
    live = pix < S * S
    pix = tl.where(live, pix, 0)  # dead lanes compute pixel 0 (finite weights) and store nothing
    oy = pix // S
    ox = pix - oy * S
    flip = tl.load(flag_ptr + n) != 0
    ox = tl.where(flip, S - 1 - ox, ox)  # output column j takes the weights of column S-1-j
    top = tl.load(box_ptr + n).to(tl.int32)
    left = tl.load(box_ptr + N + n).to(tl.int32)
    height = tl.load(box_ptr + 2 * N + n).to(tl.int32)
    width = tl.load(box_ptr + 3 * N + n).to(tl.int32)
    base = img_ptr + (n % B).to(tl.int64) * sib
    # augment._aa_weights per axis: centre of each output pixel in input coordinates, filter stretched when
    # downscaling, taps from the first pixel it can reach, cut at the box
    scale_y = height.to(tl.float32) / S
    scale_x = width.to(tl.float32) / S
    stretch_y = tl.maximum(scale_y, 1.0)
    stretch_x = tl.maximum(scale_x, 1.0)
    cy = top.to(tl.float32) + scale_y * (oy.to(tl.float32) + 0.5)
    cx = left.to(tl.float32) + scale_x * (ox.to(tl.float32) + 0.5)
    y_lo = tl.maximum(tl.floor(cy - _reach(stretch_y, CUBIC)).to(tl.int32), top)
    x_lo = tl.maximum(tl.floor(cx - _reach(stretch_x, CUBIC)).to(tl.int32), left)
    y_end = top + height
    x_end = left + width
    # column taps as a [BLOCK, KX] tile, normalised once; KX >= floor(2 * reach) + 2 covers every nonzero tap
    xs = x_lo[:, None] + tl.arange(0, KX)[None, :]
    wx = _tap_weight(xs, cx[:, None], stretch_x, x_end, CUBIC)
    wx = wx / tl.sum(wx, axis=1)[:, None]
    col_ok = live[:, None] & (xs < x_end)
    cols = xs * siw
    ky = tl.floor(2.0 * _reach(stretch_y, CUBIC)).to(tl.int32) + 2  # row taps of this sample, same cover
    # The loops have a runtime bound, so they are `while` loops: triton 3.6's interpreter cannot take a tensor as
    # the bound of `range` (it holds scalars as 1-element arrays); compiled, it is the same loop (scf.while).
    sum_y = tl.zeros([BLOCK], dtype=tl.float32)
    i = 0
    while i < ky:
        y = y_lo + i
        sum_y += _tap_weight(y, cy, stretch_y, y_end, CUBIC)
        i += 1
    acc_r = tl.zeros([BLOCK], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK], dtype=tl.float32)
    i = 0
    while i < ky:
        y = y_lo + i
        i += 1
        wy = _tap_weight(y, cy, stretch_y, y_end, CUBIC) / sum_y
        ok = col_ok & (y < y_end)[:, None]
        p = base + (y * sih)[:, None] + cols
        # each row's horizontal pass clipped to the pixel range, as augment._resample (a no-op for the triangle)
        acc_r += wy * _row_pass(wx, p, ok, CUBIC)
        acc_g += wy * _row_pass(wx, p + sic, ok, CUBIC)
        acc_b += wy * _row_pass(wx, p + 2 * sic, ok, CUBIC)
    r = _clamp01(acc_r / 255.0)
    g = _clamp01(acc_g / 255.0)
    b = _clamp01(acc_b / 255.0)
    if BRIGHT:
        f = tl.load(fac_ptr + n)
        r, g, b = _clamp01(r * f), _clamp01(g * f), _clamp01(b * f)
    if CONTRAST:  # the image mean is needed first: partial luma sums for the colour pass
        tl.store(part_ptr + n * tl.num_programs(0) + tile, tl.sum(tl.where(live, _luma(r, g, b), 0.0), axis=0))
    else:
        r, g, b = _colour_tail(r, g, b, fac_ptr, flag_ptr, n, N, SAT, HUE, GRAY)
        if FINISH:
            r, g, b = _finish(r, g, b, flag_ptr, n, N, thr, m0, m1, m2, s0, s1, s2, SOL)
    _store_rgb(dst_ptr, n, pix, live, r, g, b, S)


@triton.jit
def colour_kernel(src_ptr, fac_ptr, flag_ptr, part_ptr, dst_ptr, N, thr, m0, m1, m2, s0, s1, s2,
                   S: tl.constexpr, BLOCK: tl.constexpr, NT: tl.constexpr, NT_POW2: tl.constexpr,
                   SAT: tl.constexpr, HUE: tl.constexpr, GRAY: tl.constexpr, FINISH: tl.constexpr,
                   SOL: tl.constexpr):
    """Pass 1b (with contrast): contrast against the image's luma mean, saturation, hue, grayscale
    (+ solarize/normalise/cast without blur). Grid (cdiv(S * S, BLOCK), N); NT crop tiles."""
    n = tl.program_id(1)
    pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = pix < S * S
    r, g, b = _load_rgb(src_ptr, n, pix, live, S)
    t = tl.arange(0, NT_POW2)
    mean = tl.sum(tl.load(part_ptr + n * NT + t, mask=t < NT, other=0.0), axis=0) / (S * S)
    f = tl.load(fac_ptr + N + n)
    r, g, b = _blend(r, mean, f), _blend(g, mean, f), _blend(b, mean, f)
    r, g, b = _colour_tail(r, g, b, fac_ptr, flag_ptr, n, N, SAT, HUE, GRAY)
    if FINISH:
        r, g, b = _finish(r, g, b, flag_ptr, n, N, thr, m0, m1, m2, s0, s1, s2, SOL)
    _store_rgb(dst_ptr, n, pix, live, r, g, b, S)


@triton.jit
def _blur_1d(src, oy, ox, live, safe, half, total, S: tl.constexpr, ALONG_X: tl.constexpr, BLOCK: tl.constexpr):
    """One separable Gaussian pass over a float32 [S, S, 3] image, reflect padding: along x or along y."""
    acc_r = tl.zeros([BLOCK], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK], dtype=tl.float32)
    t = -half
    while t <= half:  # a runtime bound: `while`, see crop_kernel
        q = tl.cast(t, tl.float32) / safe
        w = tl.exp(-0.5 * (q * q)) / total
        c = (ox if ALONG_X else oy) + t
        t += 1
        c = tl.where(c < 0, -c, c)
        c = tl.where(c > S - 1, 2 * (S - 1) - c, c)
        p = src + ((oy * S + c) if ALONG_X else (c * S + ox)) * 3
        acc_r += tl.load(p, mask=live, other=0.0) * w
        acc_g += tl.load(p + 1, mask=live, other=0.0) * w
        acc_b += tl.load(p + 2, mask=live, other=0.0) * w
    return acc_r, acc_g, acc_b


@triton.jit
def _blur_pass(src_ptr, fac_ptr, N, HALF, S: tl.constexpr, BLOCK: tl.constexpr, ALONG_X: tl.constexpr):
    """This program's pixels of a float32 [S, S, 3] image blurred along x or y: (n, pix, live, r, g, b)."""
    n = tl.program_id(1)
    pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = pix < S * S
    oy = pix // S
    ox = pix - oy * S
    safe, half, total = _gauss_taps(fac_ptr, n, N, HALF)
    src = src_ptr + n.to(tl.int64) * (S * S * 3)
    r, g, b = _blur_1d(src, oy, ox, live, safe, half, total, S, ALONG_X, BLOCK)
    return n, pix, live, r, g, b


@triton.jit
def blur_rows_kernel(src_ptr, fac_ptr, dst_ptr, N, HALF, S: tl.constexpr, BLOCK: tl.constexpr):
    """Pass 2a: horizontal Gaussian blur with per-sample sigma, reflect padding. Grid (cdiv(S * S, BLOCK), N)."""
    n, pix, live, r, g, b = _blur_pass(src_ptr, fac_ptr, N, HALF, S, BLOCK, True)
    _store_rgb(dst_ptr, n, pix, live, r, g, b, S)


@triton.jit
def blur_cols_kernel(src_ptr, fac_ptr, flag_ptr, dst_ptr, N, HALF, thr, m0, m1, m2, s0, s1, s2,
                      S: tl.constexpr, BLOCK: tl.constexpr, SOL: tl.constexpr):
    """Pass 2b: vertical Gaussian blur, then solarize, normalise and the cast. Grid (cdiv(S * S, BLOCK), N)."""
    n, pix, live, r, g, b = _blur_pass(src_ptr, fac_ptr, N, HALF, S, BLOCK, False)
    r, g, b = _finish(r, g, b, flag_ptr, n, N, thr, m0, m1, m2, s0, s1, s2, SOL)
    _store_rgb(dst_ptr, n, pix, live, r, g, b, S)
