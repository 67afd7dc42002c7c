"""FLOPs and the peak they are measured against, for the step section's MFU: the dense matmul rate of the
device, FlopCounterMode counts (with the CPU attention formulas torch lacks) and the meta-device cross-check."""
from __future__ import annotations

import torch

from benchmarks import package as pkg
from benchmarks.timing import time_loop


def measure_peak(device: torch.device, quick: bool) -> dict:
    """The dense matmul rate MFU is measured against: bf16 n^3 on CUDA (n = 8192), fp32 on CPU (n = 2048), best of
    3 runs of back-to-back products."""
    gpu = device.type == "cuda"
    n = (4096 if quick else 8192) if gpu else (1024 if quick else 2048)
    dtype = torch.bfloat16 if gpu else torch.float32
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} torch thread(s)"
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g, device=device, dtype=dtype)
    t = time_loop(lambda: torch.mm(a, b), device, warmup=3 if gpu else 1, steps=20 if gpu else 2, repeats=3)
    flops = 2 * n ** 3
    dt = str(dtype).replace("torch.", "")
    row = {"device": where, "dtype": dt, "size": f"{n}x{n} @ {n}x{n}", "flops_per_matmul": flops,
           "ms_per_matmul": round(1e3 * t["min_s"], 3), "tflops": round(flops / t["min_s"] / 1e12, 3)}
    row["name"] = f"measured dense {dt} matmul {n}^3 on {where}: {row['tflops']} TFLOP/s"
    row["flops_per_s"] = flops / t["min_s"]
    return row


def attention_flop_formulas() -> tuple[dict, str]:
    """(custom_mapping for FlopCounterMode, how attention is counted). torch registers FLOP formulas for the CUDA
    SDPA kernels (flash, efficient, cuDNN) but none for the CPU flash kernel, so without this mapping attention
    counts as zero on CPU; the mapping reuses torch's own SDPA formulas for that kernel and its backward."""
    from torch.utils import flop_counter as fc
    aten = torch.ops.aten
    mapping = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in fc.flop_registry and hasattr(fc, "sdpa_flop_count"):
        mapping[fwd] = lambda q, k, v, *args, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v)
    if bwd is not None and bwd not in fc.flop_registry and hasattr(fc, "sdpa_backward_flop_count"):
        mapping[bwd] = lambda g, q, k, v, *args, out_shape=None, **kw: fc.sdpa_backward_flop_count(g, q, k, v)
    if mapping:
        how = ("torch's SDPA formulas registered for " + " and ".join(f"aten.{op.__name__}" for op in mapping)
               + " (custom_mapping; torch has none for them, so CPU attention would count as zero)")
    else:
        how = "torch's own formulas (no mapping needed)"
    return mapping, how


def how_counted(device: torch.device) -> str:
    """How the FLOPs of a step on ``device`` are counted (the report's ``flops_counted``)."""
    if device.type == "cuda":
        return "FlopCounterMode on the real CUDA step"
    return "FlopCounterMode on the real CPU step, attention by " + attention_flop_formulas()[1]


def count_flops(fn) -> tuple[int, int]:
    """(total FLOPs, attention FLOPs) of one call of ``fn`` under FlopCounterMode (matmuls, convolutions, SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode
    mapping, _ = attention_flop_formulas()
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    per_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in per_op.items() if "attention" in str(op))
    return counter.get_total_flops(), attention


def meta_fwd_bwd_flops(cfg, batch: int) -> int:
    """FLOPs of one single-view forward+backward of ``model.backbone`` on the meta device, where SDPA decomposes into
    counted matmuls: the cross-check of the CPU attention formulas."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        backbone = pkg.build_backbone(cfg)
        x = torch.empty(batch, 3, cfg.data.image_size, cfg.data.image_size)
    with FlopCounterMode(display=False) as counter:
        backbone(x).float().sum().backward()
    return counter.get_total_flops()


def meta_check(row: dict, cfg, batch: int) -> None:
    """Add the meta-device count of ``row``'s single-view pass and how it compares with ``flops_fwd_bwd``."""
    try:
        meta = row["flops_fwd_bwd_meta"] = meta_fwd_bwd_flops(cfg, batch)
        # on meta SDPA runs as plain matmuls (2 forward, 4 backward); the flash formulas also count the backward's
        # recomputation of QK^T, one seventh of the attention FLOPs (2 forward + 5 backward, equal head dims)
        expected = row["flops_fwd_bwd"] - row["attention_flops"] // 7
        row["meta_check"] = ("equal to the count less the flash backward's QK^T recompute" if meta == expected else
                             f"differs from the count less the QK^T recompute by {meta - expected}")
    except Exception as e:  # noqa: BLE001 - the cross-check is optional: say why it is missing
        row["flops_fwd_bwd_meta"] = f"failed: {type(e).__name__}: {e}"
