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
from benchmarks.sections.common import Context, drain, folder_sizes, image_source, recipes


def bench_loaders(device: torch.device, data: str | None, images: int, batch: int, workers: int, size: int,
                  local_size: int = 96, local_crops: int = 8) -> list[dict]:
    """images/s of every loader for MoCo v3's two views and DINO's multi-crop, same CPU threads for each."""
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
            ld = pkg.build_loader(name, ffcv_cfg if name == "ffcv" else cfg, recipe, device,
                                  None if name in ("synthetic", "ffcv") else split)
            ld.set_epoch(0)
            n, secs = drain(iter(ld), device, images)  # the same image count for every loader
            rows.append({"loader": name, "recipe": recipe_name, "size": size, "batch": batch,
                         "cpu_workers": workers, "images": n, "seconds": round(secs, 3),
                         "images_per_s": round(n / max(secs, 1e-9), 1),
                         "source": "random tensors on device" if name == "synthetic" else source})
            print(f"  loader {name:9s} {recipe_name:24s} {rows[-1]['images_per_s']:8.1f} img/s", file=sys.stderr)
            del ld
    return rows


def run(ctx: Context) -> None:
    args = ctx.args
    size, batch, images, local_size = folder_sizes(args)
    ctx.results["loaders"] = bench_loaders(ctx.device, args.data, images, batch, args.workers, size, local_size)
    rate = {(r["loader"], r["recipe"]): r["images_per_s"] for r in ctx.results["loaders"]}
    for (name, recipe), v in rate.items():
        if name in ("dali", "nvjpeg", "ffcv") and rate.get(("torch", recipe)):
            print(f"  {name} / torch, {recipe}: {v / rate[('torch', recipe)]:.2f}x", file=sys.stderr)
