"""Triton twins of SDMP's mixing and of the batched view augmentation, chosen once at build time.

Each kernel is the twin of a plain-torch reference with the same signature, which stays the definition of
the result: :func:`sdmp_fast.kernels.mixing.apply_mix` / ``mix`` twin :func:`sdmp_fast.mixing.apply_mix` /
``mix`` for an op named on the host, and :func:`sdmp_fast.kernels.augment.apply_views` twins
:func:`sdmp_fast.augment.apply_views`. All arithmetic is float32; bf16 and fp16 are only loaded and stored,
and the output is rounded once.

``sdmp.impl`` (through :func:`select_mixer`) and ``data.augment_impl`` (the nvjpeg and ffcv loaders, through
:func:`select_apply_views`) choose the implementation. This module imports no triton itself, so
``import sdmp_fast.kernels`` is free; selecting ``triton`` without a GPU (and without ``TRITON_INTERPRET=1``)
or without a working triton raises :class:`~sdmp_fast.config.ConfigError` naming the torch fallback.
"""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Callable

import torch

from sdmp_fast.schema import ConfigError

if TYPE_CHECKING:
    from sdmp_fast.mixing import Mixer

__all__ = ["select_mix", "select_mixer", "select_apply_views", "unavailable_reason", "check_launchable",
           "device_guard", "interpreting"]


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


def select_mixer(cfg) -> Mixer | None:
    """The run's :class:`~sdmp_fast.mixing.Mixer` (None without SDMP): ``sdmp.ops``, ``sdmp.alpha``, the mix of
    ``sdmp.impl``, and ops drawn on the device under ``run.cuda_graph`` (a captured step replays no host draw)."""
    from sdmp_fast.mixing import build_mixer
    s = cfg.sdmp
    if not s.enabled:
        return None
    return build_mixer(s.ops, s.alpha, device_draws=cfg.run.cuda_graph, mix_fn=select_mix(s.impl))


def select_apply_views(impl: str) -> Callable:
    """The ``apply_views(images, sizes, params, recipe, out_dtype)`` of ``data.augment_impl``, resolved once."""
    from sdmp_fast.augment import apply_views
    return _select("data.augment_impl", impl, "augment", "apply_views", apply_views)
