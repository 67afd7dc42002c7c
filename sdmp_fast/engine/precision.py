"""One precision path for every command: the autocast dtype of ``run.precision`` and its context."""
from __future__ import annotations

import contextlib

import torch


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``run.precision`` -> dtype: auto = bf16 on CUDA, fp32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast_context(device: torch.device, dtype: torch.dtype, cache_enabled: bool = True):
    """Autocast to ``dtype`` on ``device``; nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)
