"""``loaders``: images/s of each available loader (synthetic, torch, nvjpeg, dali, ffcv) for the MoCo v3
two-view recipe (224 px) and DINO's multi-crop (2 x 224 + 8 x 96), with the same CPU threads/workers, on a
generated ImageNet-like JPEG set (about 500x375, quality 90, textured) or on ``--data``."""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks import package as pkg
from benchmarks.sections.common import (
    LATE,
    Context,
    drain,
    failed,
    folder_sizes,
    free_device,
    image_source,
    past,
    recipes,
)


def bench_loaders(device: torch.device, data: str | None, images: int, batch: int, workers: int, size: int,
                  local_size: int, ctx: Context, local_crops: int = 8) -> list[dict]:
    """images/s of every loader for MoCo v3's two views and DINO's multi-crop, same CPU threads for each; each
    (recipe, loader) arm is guarded on its own, skipped past the budget and saved as it ends."""
    cfg = pkg.load_config(overrides={"data.batch_size": batch, "data.num_workers": workers, "data.image_size": size,
                                     "data.dali_threads": workers})
    names = ["synthetic", "torch", "nvjpeg"] + [n for n, mod in (("dali", "nvidia.dali"), ("ffcv", "ffcv"))
                                                if importlib.util.find_spec(mod)]
    tmp, root, source = image_source(data, images)
    split, _ = pkg.scan_folder(root)
    ffcv_cfg = None
    if "ffcv" in names:  # the same images as a .beton (the converter's defaults)
        beton = Path(tmp.name if tmp else tempfile.mkdtemp()) / "train.beton"
        pkg.write_beton(root, beton, workers=workers)
        ffcv_cfg = pkg.load_config(overrides={"data.batch_size": batch, "data.num_workers": workers,
                                              "data.image_size": size, "data.loader": "ffcv", "data.beton": str(beton)})
    rows = []
    for recipe_name, recipe in recipes(size, local_size, local_crops).items():
        for name in names:
            row = {"loader": name, "recipe": recipe_name, "size": size, "batch": batch, "cpu_workers": workers,
                   "source": "random tensors on device" if name == "synthetic" else source}
            if past(ctx.deadline):
                row["status"] = LATE
            else:
                try:
                    ld = pkg.build_loader(name, ffcv_cfg if name == "ffcv" else cfg, recipe, device,
                                          None if name in ("synthetic", "ffcv") else split)
                    ld.set_epoch(0)
                    n, secs = drain(iter(ld), device, images)  # the same image count for every loader
                    row.update(status="ok", images=n, seconds=round(secs, 3), images_per_s=round(n / max(secs, 1e-9), 1))
                    del ld
                except Exception as e:  # noqa: BLE001 - one failed loader is reported; the others still run
                    row["status"] = failed(f"loader {name} {recipe_name}", e, ctx.failures)
                    free_device(device)
            rows.append(row)
            ctx.progress("loaders", row)
            print(f"  loader {name:9s} {recipe_name:24s} {row.get('images_per_s', '-')} img/s ({row['status']})",
                  file=sys.stderr)
    return rows


def run(ctx: Context) -> None:
    args = ctx.args
    size, batch, images, local_size = folder_sizes(args)
    ctx.results["loaders"] = bench_loaders(ctx.device, args.data, images, batch, args.workers, size, local_size, ctx)
    rate = {(r["loader"], r["recipe"]): r["images_per_s"] for r in ctx.results["loaders"] if r["status"] == "ok"}
    for (name, recipe), v in rate.items():
        if name in ("dali", "nvjpeg", "ffcv") and rate.get(("torch", recipe)):
            print(f"  {name} / torch, {recipe}: {v / rate[('torch', recipe)]:.2f}x", file=sys.stderr)
