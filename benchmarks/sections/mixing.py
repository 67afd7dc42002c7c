"""``mixing``: batched ``sdmp_fast.mixing.mix`` against a per-sample loop in the official code's style
(per-sample box, F.interpolate per sample, a host round-trip per sample), and against ``x.clone()``; on
CUDA also the Triton kernel (``sdmp_fast.kernels.mixing``, fp32 and bf16 output; skipped on CPU)."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from benchmarks import package as pkg
from benchmarks.sections.common import LATE, SKIPPED_ON_CPU, Context, past
from benchmarks.timing import time_fn


def loop_mix_reference(x: torch.Tensor, lam: torch.Tensor, op: str) -> torch.Tensor:
    """The official code's style: one Python iteration per sample, a host read of lambda per sample."""
    B, _, H, W = x.shape
    out = x.clone()
    for i in range(B):
        li = float(lam[i].cpu())  # host round-trip per sample, as datamixing() does
        j = B - 1 - i
        if op == "mixup":
            out[i] = li * x[i] + (1 - li) * x[j]
            continue
        if op == "resizemix":
            li = 0.8 * li + 0.1
        h, w = int(H * (1 - li) ** 0.5), int(W * (1 - li) ** 0.5)
        if h == 0 or w == 0:
            continue
        top, left = random.randint(0, H - h), random.randint(0, W - w)
        if op == "cutmix":
            out[i, :, top:top + h, left:left + w] = x[j, :, top:top + h, left:left + w]
        else:
            out[i, :, top:top + h, left:left + w] = F.interpolate(x[j:j + 1], size=(h, w), mode="bilinear",
                                                                  align_corners=False)[0]
    return out


def triton_arms(triton_mix, x: torch.Tensor, lam: torch.Tensor, op: str, g: torch.Generator, t_fast: float,
                iters: int) -> dict:
    """The Triton kernel's time (fp32 and bf16 output) and its speedup over ``mix``."""
    t_tri = time_fn(lambda: triton_mix(x, lam, op, generator=g), x.device, warmup=1, iters=iters)["median_s"]
    t_bf16 = time_fn(lambda: triton_mix(x, lam, op, generator=g, out_dtype=torch.bfloat16), x.device,
                     warmup=1, iters=iters)["median_s"]
    return {"triton_ms": round(1e3 * t_tri, 2), "triton_bf16_out_ms": round(1e3 * t_bf16, 2),
            "triton_images_per_s": round(x.shape[0] / t_tri, 1), "triton_speedup_vs_mix": round(t_fast / t_tri, 2)}


def bench_mixing(device: torch.device, batch: int, size: int, iters: int, ctx: Context | None = None) -> list[dict]:
    """Per op: ``mix``, the per-sample loop, ``x.clone()`` (and the Triton kernel on CUDA); with ``ctx``, each op
    is skipped past the budget and saved as it ends."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    lam = torch.rand(batch, device=device, generator=g)
    clone = time_fn(lambda: x.clone(), device, warmup=1, iters=iters)["median_s"]
    # on CPU the kernel would run in Triton's interpreter: not a throughput
    triton_mix = pkg.triton_mix() if device.type == "cuda" else None
    rows = []
    for op in ("mixup", "cutmix", "resizemix"):
        if ctx is not None and past(ctx.deadline):
            rows.append({"op": op, "batch": batch, "size": size, "status": LATE})
            ctx.progress("mixing", rows[-1])
            continue
        t_fast = time_fn(lambda: pkg.mix(x, lam, op, generator=g), device, warmup=1, iters=iters)["median_s"]
        t_loop = time_fn(lambda: loop_mix_reference(x, lam, op), device, warmup=1, iters=max(2, iters // 2))["median_s"]
        triton = ({"triton": SKIPPED_ON_CPU} if triton_mix is None else
                  triton_arms(triton_mix, x, lam, op, g, t_fast, iters))
        rows.append({"op": op, "batch": batch, "size": size, "mix_ms": round(1e3 * t_fast, 2),
                     "loop_ms": round(1e3 * t_loop, 2), "clone_ms": round(1e3 * clone, 2),
                     "mix_images_per_s": round(batch / t_fast, 1), "loop_images_per_s": round(batch / t_loop, 1),
                     "speedup_vs_loop": round(t_loop / t_fast, 2), "mix_over_clone": round(t_fast / clone, 2),
                     "gb_per_s": round(2 * x.numel() * x.element_size() / t_fast / 1e9, 1), "status": "ok", **triton})
        if ctx is not None:
            ctx.progress("mixing", rows[-1])
    return rows


def run(ctx: Context) -> None:
    batch, size = (16, 64) if ctx.args.quick else (256, 224)
    ctx.results["mixing"] = bench_mixing(ctx.device, batch, size,
                                         iters=3 if ctx.args.quick else (20 if ctx.gpu else 5), ctx=ctx)
