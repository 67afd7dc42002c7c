"""``augment``: ``sdmp_fast.augment`` (sample + apply, batched) on decoded images against the per-sample
torchvision ops of the reference loader, for both recipes; on CUDA also the Triton kernels
(``sdmp_fast.kernels.augment``; skipped on CPU, where they would run in the interpreter)."""
from __future__ import annotations

import sys

import torch

from benchmarks import package as pkg
from benchmarks.sections.common import IMAGENET_MEAN, IMAGENET_STD, LATE, SKIPPED_ON_CPU, Context, past, recipes
from benchmarks.timing import time_fn


def decoded_images(batch: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(images [3, H, W] uint8, canvas [B, 3, 500, 500] with them top-left, sizes [B, 2]): ImageNet-like shapes."""
    g = torch.Generator().manual_seed(0)
    hw = [(375, 500), (500, 375), (333, 500), (360, 480)]
    imgs = [torch.randint(0, 256, (3, *hw[i % 4]), generator=g, dtype=torch.uint8) for i in range(batch)]
    canvas = torch.zeros(batch, 3, 500, 500, dtype=torch.uint8)
    for b, x in enumerate(imgs):
        canvas[b, :, :x.shape[1], :x.shape[2]] = x
    return imgs, canvas, torch.tensor([list(x.shape[1:]) for x in imgs])


def bench_augment(device: torch.device, batch: int, size: int, local_size: int, iters: int) -> list[dict]:
    """Batched sdmp_fast.augment vs the reference loader's per-sample torchvision ops, on decoded images."""
    imgs, canvas, sizes = decoded_images(batch)
    canvas, sizes = canvas.to(device), sizes.to(device)
    m, s = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    # on CPU the kernels would run in Triton's interpreter: not a throughput
    triton_views = pkg.triton_apply_views() if device.type == "cuda" else None
    rows = []
    for name, recipe in recipes(size, local_size).items():
        gen = torch.Generator(device=device).manual_seed(0)
        batched = time_fn(lambda: pkg.apply_views(canvas, sizes, pkg.sample_view_params(recipe, sizes, gen), recipe),
                          device, iters=iters, warmup=1)["median_s"]
        if triton_views is not None:
            t_tri = time_fn(lambda: triton_views(canvas, sizes, pkg.sample_view_params(recipe, sizes, gen), recipe),
                            device, iters=iters, warmup=1)["median_s"]
            triton = {"triton_ms": round(t_tri * 1e3, 2), "images_per_s_triton": round(batch / t_tri, 1),
                      "triton_speedup_vs_batched": round(batched / t_tri, 2)}
        else:
            triton = {"triton": SKIPPED_ON_CPU}

        def per_sample():
            for i, x in enumerate(imgs):
                gi = pkg.sample_generator(0, 0, i)
                [pkg.reference_view(x, spec, gi, m, s) for spec in recipe.views]
        loop = time_fn(per_sample, torch.device("cpu"), iters=max(1, iters // 2), warmup=0)["median_s"]
        rows.append({"recipe": name, "batch": batch, "size": size, "batched_ms": round(batched * 1e3, 2),
                     "per_sample_torchvision_ms": round(loop * 1e3, 2), "speedup": round(loop / batched, 2),
                     "images_per_s_batched": round(batch / batched, 1), **triton})
        print(f"  augment {name:24s} batched {batched * 1e3:8.1f} ms  per-sample {loop * 1e3:8.1f} ms  "
              f"triton {triton.get('triton_ms', 'skipped (CPU)')}", file=sys.stderr)
    return rows


def run(ctx: Context) -> None:
    if past(ctx.deadline):
        ctx.results["augment"] = [{"status": LATE}]
        return
    batch, size = (8, 64) if ctx.args.quick else ((256 if ctx.gpu else 32), 224)
    ctx.results["augment"] = bench_augment(ctx.device, batch, size, size * 96 // 224, iters=2 if ctx.args.quick else 5)
