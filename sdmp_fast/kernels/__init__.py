"""Triton kernels for SDMP's mixing and for the batched view augmentation (the only package importing triton).

SDMP ("A Simple Data Mixing Prior for Improving Self-Supervised Learning", Ren et al., CVPR 2022,
https://arxiv.org/abs/2206.07692). Each kernel is the twin of a plain-torch reference with the same
signature, which stays the definition of the result:

* :func:`sdmp_fast.kernels.mixing.apply_mix` / ``mix`` twin :func:`sdmp_fast.mixing.apply_mix` / ``mix``;
* :func:`sdmp_fast.kernels.augment.apply_views` twins :func:`sdmp_fast.augment.apply_views`.

The implementation is chosen once, at build time, by ``sdmp.impl`` (the methods) and
``data.augment_impl`` (the nvjpeg and ffcv loaders) through :func:`select_mix` and
:func:`select_apply_views`. This module imports no triton itself, so ``import sdmp_fast.kernels`` is free;
selecting ``triton`` without a GPU (and without ``TRITON_INTERPRET=1``) or without a working triton
raises :class:`~sdmp_fast.config.ConfigError` naming the torch fallback.

Design
------
* Mixing, one launch per batch for any op: grid (tiles of one sample's H*W*C values, B). Each program reads
  the sample and its partner B-1-i (any input strides, bf16/fp16/fp32, converted to float32) and writes
  ``BLOCK`` consecutive values of the channels-last output in the requested dtype (default: the input's).
  The op is a compile-time constant. Mixup and ResizeMix's bilinear taps use ``torch.lerp``'s formula, the box
  a select (the reference's lerp with a 0/1 weight gives the same values); the partner is read only inside
  the box. ResizeMix resamples the whole partner into the box in the kernel with the
  reference's arithmetic: the float32 scale ``n / size`` and the source coordinate ``scale * (p + 0.5) - 0.5``
  are each one rounding of an exact float64 value (as torch's float32 fused multiply-add), the same clamped
  taps, rows blended before columns. Returns ``(mixed, lam_eff)`` like the reference.
* Augmentation, per output resolution (views of one size, e.g. MoCo v3's two, are stacked into one launch;
  ops a view's spec never applies hold identity parameters, so stacking does not change results), up to
  four launches, each over (pixel tiles, views x B):
  1. crop: random-resized crop straight from the uint8 canvas (any strides, so the ffcv loader's NHWC canvas
     needs no copy) with the reference's antialiased triangle filter (``augment._aa_weights``): per output
     pixel, the weights of its taps are computed in the kernel over the box span (stretched by the downscale
     factor, cut at the span, normalised), the flip folded into the column position. The column taps are a
     ``[BLOCK, KX]`` tile computed once (KX bounded from the canvas width), the row taps a loop whose length
     is the sample's own. Then brightness; the pass writes per-tile luma sums for contrast, and without
     contrast it runs the rest of the colour stage itself.
  2. colour (only when contrast is on): the per-image luma mean from those partial sums (a deterministic
     reduction, no atomics), then contrast -> saturation -> hue, then grayscale.
  3. blur rows, 4. blur columns + finish (only when a view can blur): the separable per-sample Gaussian blur
     with reflect padding and the reference's tap rule, then solarize, normalise and the cast to the output
     dtype, channels-last. Without blur the finish is fused into the last colour pass.
  Intermediates are float32 ``[N, s, s, 3]`` buffers. The crop reads O(row taps x KX) canvas pixels per
  output pixel: cheap for the usual crops (KX = 8 for 224 px views of a 500 px canvas), wasteful for small
  views of very large canvases (KX grows with the canvas, not with the box), where a two-pass resample
  (rows, then columns) would do less work. Block sizes and warps are untuned (no GPU was available).
* bf16 and fp16 are only loaded and stored: all arithmetic is float32, and the output is rounded once.

Verified here, on a CPU without a GPU (``tests/kernels``): every kernel against its torch reference under the
Triton interpreter (``TRITON_INTERPRET=1``, one subprocess per session) on small random batches (every
mixing op, every augmentation stage and whole recipes, odd sizes, boxes touching the borders, lam 0 and 1,
fp32 and bf16 outputs; bf16 within 1 ulp, because the interpreter truncates on the cast where a GPU rounds to
nearest), and an ahead-of-time compilation of every kernel for sm_90 (PTX and cubin, with the ptxas that ships
in triton's wheel). The same parity tests are marked ``gpu`` to run compiled on CUDA; they have not run, and
no GPU timing has been measured for these kernels.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch

__all__ = ["select_mix", "select_apply_views", "unavailable_reason", "check_launchable", "device_guard",
           "interpreting"]


def interpreting() -> bool:
    """True when triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "off")


def unavailable_reason() -> str | None:
    """Why the triton kernels cannot run in this process, or None when they can."""
    if not interpreting() and not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch (and TRITON_INTERPRET is not set)"
    try:
        import triton  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure makes the backend unusable
        return f"triton cannot be imported ({type(e).__name__}: {e})"
    return None


def check_launchable(x: torch.Tensor, key: str) -> None:
    """Raise when ``x`` lives where the compiled kernels cannot run (a CPU tensor outside the interpreter)."""
    if x.device.type != "cuda" and not interpreting():
        raise RuntimeError(f"{key}=triton runs on CUDA tensors, got a tensor on {x.device}; set {key}=torch "
                           "for CPU runs")


def device_guard(x: torch.Tensor):
    """Make x's GPU current for a launch (triton launches on the current device; a loader thread's may differ)."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def _select(key: str, impl: str, module: str, attr: str, reference: Callable) -> Callable:
    from sdmp_fast.config import ConfigError
    if impl == "torch":
        return reference
    if impl != "triton":
        raise ConfigError(f"{key} = {impl!r}: choose torch or triton")
    reason = unavailable_reason()
    if reason is None:
        try:
            import importlib
            return getattr(importlib.import_module(f"sdmp_fast.kernels.{module}"), attr)
        except Exception as e:  # noqa: BLE001 - e.g. a triton whose API this code does not know
            reason = f"the kernels do not load ({type(e).__name__}: {e})"
    raise ConfigError(f"{key} = 'triton' is not usable here: {reason}; set {key}=torch (the reference "
                      "implementation, any device)")


def select_mix(impl: str) -> Callable:
    """The ``mix(x, lam, op, generator=None)`` of ``sdmp.impl`` (torch or triton), resolved once."""
    from sdmp_fast.mixing import mix
    return _select("sdmp.impl", impl, "mixing", "mix", mix)


def select_apply_views(impl: str) -> Callable:
    """The ``apply_views(images, sizes, params, recipe, out_dtype)`` of ``data.augment_impl``, resolved once."""
    from sdmp_fast.augment import apply_views
    return _select("data.augment_impl", impl, "augment", "apply_views", apply_views)
