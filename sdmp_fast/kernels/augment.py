"""Triton twin of :func:`sdmp_fast.augment.apply_views`: every view of one output size in a few launches.

Same signature and results (up to float32 rounding) as the reference. Views of one size and filter (e.g.
MoCo v3's two) are stacked into one launch group; ops a view's spec never applies hold identity parameters, so
stacking does not change results. Up to four launches per group, each over (pixel tiles, views x B):

1. crop: random-resized crop straight from the uint8 canvas (any strides, so the ffcv loader's NHWC canvas
   needs no copy) with the reference's antialiased filter (the triangle, or the cubic for bicubic views, whose
   horizontal pass is clipped to [0, 255] per row as the reference's): per output pixel, the weights of its
   taps are computed over the box span (stretched by the downscale factor, cut at the span, normalised),
   the flip folded into the column position. The column taps are a ``[BLOCK, KX]`` tile computed once (KX
   bounded from the canvas width), the row taps a loop whose length is the sample's own. Then brightness;
   the pass writes per-tile luma sums for contrast, and without contrast it runs the rest of the colour
   stage itself.
2. colour (only with contrast): the per-image luma mean from those partial sums (a deterministic reduction,
   no atomics), then contrast -> saturation -> hue, then grayscale.
3. blur rows, 4. blur columns + finish (only when a view can blur): the separable per-sample Gaussian blur
   with reflect padding and the reference's tap rule, then solarize, normalise and the cast to the output
   dtype, channels-last. Without blur the finish is fused into the last colour pass.

Intermediates are float32 ``[N, s, s, 3]`` buffers. The crop reads O(row taps x KX) canvas pixels per output
pixel: cheap for the usual crops (KX = 8 for bilinear 224 px views of a 500 px canvas, 16 for bicubic ones,
whose filter reaches twice as far), wasteful for small views of very large canvases (KX grows with the canvas,
not with the box), where a two-pass resample (rows, then columns) would do less work. Per-view parameters are
packed per launch into ``box [4, N]`` (top, left, height, width; int64), ``factors [5, N]`` (brightness,
contrast, saturation, hue, sigma; float32) and ``flags [3, N]`` (flip, gray, solarize; uint8), N = views x B,
sample n reading canvas image n % B.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
from torch import Tensor

from sdmp_fast.augment import ViewParams, check_canvas
from sdmp_fast.augment.recipes import Recipe, ViewSpec
from sdmp_fast.kernels import check_launchable, device_guard
from sdmp_fast.kernels.augment_kernels import BLOCK, blur_cols_kernel, blur_rows_kernel, colour_kernel, crop_kernel

KERNELS = {"crop": crop_kernel, "colour": colour_kernel, "blur_rows": blur_rows_kernel, "blur_cols": blur_cols_kernel}

# ----------------------------------------------------------------------------------------------- host side


def stages(specs: Sequence[ViewSpec]) -> dict:
    """Static switches of one launch group: an op runs if any of its views can apply it (the others hold
    identity parameters there, which leave their pixels exactly unchanged)."""
    jitter = [s.jitter if s.jitter_p > 0 and any(v > 0 for v in s.jitter) else (0.0, 0.0, 0.0, 0.0) for s in specs]
    half = max((s.blur_half for s in specs), default=0)
    return dict(BRIGHT=any(j[0] > 0 for j in jitter), CONTRAST=any(j[1] > 0 for j in jitter),
                SAT=any(j[2] > 0 for j in jitter), HUE=any(j[3] > 0 for j in jitter),
                GRAY=any(s.gray_p > 0 for s in specs), SOL=any(s.solarize_p > 0 for s in specs), HALF=half)


def _pack(params: Sequence[ViewParams], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """box [4, N] int64, factors [5, N] float32, flags [3, N] uint8 for the views of one launch (N = V * B)."""
    def stack(names, dtype):
        t = torch.stack([getattr(p, k).to(device=device, dtype=dtype) for k in names for p in params])
        return t.view(len(names), -1)
    box = stack(("top", "left", "height", "width"), torch.int64)
    factors = stack(("brightness", "contrast", "saturation", "hue", "sigma"), torch.float32)
    flags = stack(("flip", "gray", "solarize"), torch.uint8)
    return box, factors, flags


def crop_tiling(wmax: int, S: int, cubic: bool = False) -> tuple[int, int]:
    """(pixels per crop program, column-tap bound KX) for a canvas Wmax wide and S px views, bilinear or ``cubic``.

    The filter reaches ``support`` (triangle 1, cubic 2) times the stretch max(w / S, 1) on each side, and a box
    is at most Wmax wide, so no sample needs more than floor(2 * support * Wmax / S) + 2 column taps; one more
    absorbs float32 rounding of the kernel's stretch. The [BLOCK, KX] tap tile is kept at <= 4096 values.
    """
    support = 2 if cubic else 1
    kx = triton.next_power_of_2(2 * support * max(wmax, S) // S + 3)
    return max(16, min(256, 4096 // kx)), kx


def launch_plan(specs: Sequence[ViewSpec], wmax: int) -> dict[str, dict]:
    """The launches of one group, in order: {kernel name: its constexprs}; the last one writes the output (in its
    dtype), the others float32 buffers. What ``_launch_group`` runs and ``aot`` compiles."""
    S = specs[0].size
    if len({s.interpolation for s in specs}) > 1:
        raise ValueError(f"one launch group resizes with one filter, got {sorted({s.interpolation for s in specs})}")
    cubic = specs[0].interpolation == "bicubic"
    st = stages(specs)
    crop_block, kx = crop_tiling(wmax, S, cubic)
    blur = st["HALF"] > 0
    colour = dict(SAT=st["SAT"], HUE=st["HUE"], GRAY=st["GRAY"], SOL=st["SOL"])
    plan = {"crop": dict(S=S, BLOCK=crop_block, KX=kx, CUBIC=cubic, BRIGHT=st["BRIGHT"], CONTRAST=st["CONTRAST"],
                         FINISH=not blur, **colour)}
    if st["CONTRAST"]:
        nt = triton.cdiv(S * S, crop_block)
        plan["colour"] = dict(S=S, BLOCK=BLOCK, NT=nt, NT_POW2=triton.next_power_of_2(nt), FINISH=not blur, **colour)
    if blur:
        plan["blur_rows"] = dict(S=S, BLOCK=BLOCK)
        plan["blur_cols"] = dict(S=S, BLOCK=BLOCK, SOL=st["SOL"])
    return plan


def _launch_group(images: Tensor, params: Sequence[ViewParams], specs: Sequence[ViewSpec], mean, std,
                  out_dtype: torch.dtype) -> Tensor:
    """Every view of one launch group (see view_groups): ``[V * B, 3, s, s]`` channels-last."""
    B = images.shape[0]
    S = specs[0].size
    half = stages(specs)["HALF"]
    if half >= S:
        raise ValueError(f"blur: sigma range needs a {2 * half + 1}-tap kernel, too large for a {S}x{S} view "
                         "(reflect padding must be smaller than the image)")
    dev = images.device
    box, factors, flags = _pack(params, dev)
    N = box.shape[1]
    out = torch.empty((N, 3, S, S), device=dev, dtype=out_dtype, memory_format=torch.channels_last)
    if N == 0:
        return out
    plan = launch_plan(specs, images.shape[-1])
    grid = (triton.cdiv(S * S, BLOCK), N)
    crop = plan["crop"]
    nt_crop = triton.cdiv(S * S, crop["BLOCK"])
    norm = (float(specs[0].solarize_threshold) / 255, *map(float, mean), *map(float, std))
    buf = torch.empty((N, S, S, 3), device=dev, dtype=torch.float32) if len(plan) > 1 else out
    partials = torch.empty((N, nt_crop), device=dev, dtype=torch.float32) if "colour" in plan else buf
    crop_kernel[(nt_crop, N)](images, box, factors, flags, buf, partials, N, B, *images.stride(), *norm, **crop)
    if "colour" in plan:
        colour_kernel[grid](buf, factors, flags, partials, buf if "blur_rows" in plan else out, N, *norm,
                            **plan["colour"])
    if "blur_rows" in plan:
        rows = torch.empty_like(buf)
        blur_rows_kernel[grid](buf, factors, rows, N, half, **plan["blur_rows"])
        blur_cols_kernel[grid](rows, factors, flags, out, N, half, *norm, **plan["blur_cols"])
    return out


def view_groups(recipe: Recipe) -> list[list[int]]:
    """The recipe's views by launch group: views of the same size, solarize threshold and resize filter share the
    launches (the threshold is a launch argument, the filter a compile-time switch of the crop)."""
    groups: dict[tuple[int, int, str], list[int]] = {}
    for v, spec in enumerate(recipe.views):
        groups.setdefault((spec.size, spec.solarize_threshold, spec.interpolation), []).append(v)
    return list(groups.values())


def apply_views(images: Tensor, sizes: Tensor, params: list[ViewParams], recipe: Recipe,
                out_dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Normalised views ``[B, 3, s, s]`` (channels-last, ``out_dtype``), one per view of ``recipe``.

    Same contract as :func:`sdmp_fast.augment.apply_views`: ``images`` is the uint8 canvas ``[B, 3, Hmax, Wmax]``
    (any strides), ``params`` come from :func:`sdmp_fast.augment.sample_view_params`. Views of the same size
    (solarize threshold and filter) are made by the same launches.
    """
    check_canvas(images, sizes)
    if len(params) != len(recipe.views):
        raise ValueError(f"{len(params)} ViewParams for a recipe of {len(recipe.views)} views")
    check_launchable(images, "data.augment_impl")
    views: list[Tensor | None] = [None] * len(recipe.views)
    B = images.shape[0]
    for members in view_groups(recipe):
        with device_guard(images):
            out = _launch_group(images, [params[v] for v in members], [recipe.views[v] for v in members],
                                recipe.mean, recipe.std, out_dtype)
        for k, v in enumerate(members):
            views[v] = out[k * B:(k + 1) * B]
    return views
