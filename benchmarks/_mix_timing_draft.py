"""Draft timing of ``sdmp_fast.mixing.mix`` against a per-sample Python loop and ``x.clone()``.

The loop is the SDMP-code style baseline: one Python iteration per sample, lam read with
``.item()``, the box drawn with Python's ``random``, and ``F.interpolate`` per sample for ResizeMix.
Runs of the three contenders are interleaved round by round, so load from other processes hits
them alike; the median and the minimum over rounds are printed. CPU only (wall clock).

    python benchmarks/_mix_timing_draft.py --batch 256 --size 224 --rounds 7
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import torch
import torch.nn.functional as F

from sdmp_fast.mixing import OPS, mix


def loop_mix(x: torch.Tensor, lam: torch.Tensor, op: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample reference: the same semantics as ``mix`` with a Python loop over the batch."""
    B, _, H, W = x.shape
    out = x.clone()
    lam_eff = torch.empty(B)
    for i in range(B):
        j = B - 1 - i
        lam_i = lam[i].item()
        if op == "mixup":
            out[i] = lam_i * x[i] + (1.0 - lam_i) * x[j]
            lam_eff[i] = lam_i
            continue
        keep = lam_i if op == "cutmix" else 0.8 * lam_i + 0.1
        h, w = int(H * math.sqrt(1.0 - keep)), int(W * math.sqrt(1.0 - keep))
        top, left = random.randint(0, H - h), random.randint(0, W - w)
        if h > 0 and w > 0:
            if op == "cutmix":
                out[i, :, top:top + h, left:left + w] = x[j, :, top:top + h, left:left + w]
            else:
                out[i, :, top:top + h, left:left + w] = F.interpolate(
                    x[j][None], size=(h, w), mode="bilinear", align_corners=False)[0]
        lam_eff[i] = 1.0 - h * w / (H * W)
    return out, lam_eff


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per contender (after one warm-up)")
    parser.add_argument("--formats", default="channels_last,contiguous")
    parser.add_argument("--ops", default=",".join(OPS))
    args = parser.parse_args()

    torch.manual_seed(0)
    random.seed(0)
    B, S = args.batch, args.size
    lam = torch.rand(B)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, x = {B}x3x{S}x{S} float32, "
          f"{args.rounds} rounds; ms as median (min)")
    print(f"{'format':<15}{'op':<11}{'mix':>16}{'loop':>16}{'clone':>16}{'mix/loop':>10}")
    for fmt_name in args.formats.split(","):
        fmt = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[fmt_name]
        x = torch.randn(B, 3, S, S).contiguous(memory_format=fmt)
        for op in args.ops.split(","):
            contenders = {
                "mix": lambda: mix(x, lam, op, gen),
                "loop": lambda: loop_mix(x, lam, op),
                "clone": lambda: x.clone(),
            }
            times = {name: [] for name in contenders}
            for fn in contenders.values():
                fn()
            for _ in range(args.rounds):
                for name, fn in contenders.items():
                    times[name].append(seconds(fn) * 1e3)
            cells = [f"{statistics.median(t):7.1f} ({min(t):6.1f})" for t in times.values()]
            ratio = statistics.median(times["mix"]) / statistics.median(times["loop"])
            print(f"{fmt_name:<15}{op:<11}" + "".join(f"{c:>16}" for c in cells) + f"{ratio:>10.2f}")


if __name__ == "__main__":
    main()
