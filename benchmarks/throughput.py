"""Throughput benchmarks: the one entry point.

    python benchmarks/throughput.py [--only loaders,ffcv,augment,mixing,step,e2e] [--device auto|cpu|cuda]
                                    [--json PATH] [--report PATH.md] [--quick]

* ``loaders``: images/s of each available loader (synthetic, torch, nvjpeg, dali, ffcv) for the MoCo v3
  two-view recipe (224 px) and DINO's multi-crop (2 x 224 + 8 x 96), with the same CPU threads/workers,
  on a generated ImageNet-like JPEG set (about 500x375, quality 90, textured) or on ``--data``.
* ``ffcv``: the .beton converter (images/s, file size), the ffcv loader's decode-once design against
  FFCV-SSL-style re-decoding per view (one FFCV pipeline per view on the same image field, the same torch
  colour pipeline after it), the decode / augment split, and the crop area / aspect distribution of the
  ffcv loader (boxes on the stored, --max-resolution image) against the torch loader's (on the original).
* ``augment``: ``sdmp_fast.augment`` (sample + apply, batched) on decoded images against the per-sample
  torchvision ops of the reference loader, for both recipes; on CUDA also the Triton kernels
  (``sdmp_fast.kernels.augment``; skipped on CPU, where they would run in the interpreter).
* ``mixing``: batched ``sdmp_fast.mixing.mix`` against a per-sample loop in the official code's style
  (per-sample box, F.interpolate per sample, a host round-trip per sample), and against ``x.clone()``; on
  CUDA also the Triton kernel (``sdmp_fast.kernels.mixing``, fp32 and bf16 output; skipped on CPU).
* ``step``: on synthetic views (compute only):
  - ``step``: training-step time of each method with and without SDMP, and the ratio SDMP / plain. SDMP
    adds one momentum-encoder forward for MoCo v3 and one teacher forward on B global images for DINO;
  - ``step_modes``: MoCo v3 + SDMP and DINO + SDMP in the modes eager / unfused (``run.fused=false``) / compile (``run.compile``) / graph
    (``run.cuda_graph``; CUDA only) over ``--step-batches`` (CUDA: ViT-S/16 at 224 px, batches 32-256), with
    each mode's speedup over eager, the FLOPs of one step (``torch.utils.flop_counter.FlopCounterMode``)
    and the MFU against ``peak``: the measured dense matmul rate of the device (bf16 8192^3 on CUDA, fp32 on
    CPU). A mode whose config switch this build does not know reads "not available in this build";
  - ``single_view``: the backbone's single-view forward+backward rate (same batch, precision, channels-last)
    and ``step_targets``: the MoCo v3 + SDMP step rate / (single-view rate / 3), target >= 0.9.
* ``e2e``: real training (``sdmp_fast.pretrain.run``: config, loader, method, Trainer.fit) of MoCo v3 + SDMP
  for ``--e2e-steps`` steps after ``--e2e-warmup`` steps with each loader (``synthetic``: the compute-only
  ceiling), the rate read from the run's metrics.jsonl windows after the warm-up, and each loader's rate as a
  fraction of synthetic's (GPU target: dali >= 0.9). Loaders that cannot run here are listed with the reason.

Results are printed and written as JSON with the environment record (machine, versions, commit); ``--report``
also writes them as Markdown (every figure, the targets met or missed): ``make gpu-check`` writes
benchmarks/results/gpu-check-report.md this way. The exit status is 1 when a measurement failed.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import env_record, sync, time_fn, time_loop, write_json  # noqa: E402

SECTIONS = ("loaders", "ffcv", "augment", "mixing", "step", "e2e")


# ----------------------------------------------------------------------------- loaders

def bench_loaders(device: torch.device, data: str | None, images: int, batch: int, workers: int, size: int,
                  local_size: int = 96, local_crops: int = 8) -> list[dict]:
    """images/s of every loader for MoCo v3's two views and DINO's multi-crop, same CPU threads for each."""
    import importlib.util

    import loaders  # noqa: F401
    from sdmp_fast.config import load_config
    from sdmp_fast.data.folders import scan_folder
    from sdmp_fast.registry import LOADERS
    from sdmp_fast.augment.recipes import dino_recipe, mocov3_recipe
    cfg = load_config(overrides={"data.batch_size": batch, "data.num_workers": workers, "data.image_size": size,
                                 "data.dali_threads": workers})
    recipes = {"mocov3 two-view": mocov3_recipe(size, 0.08, cfg.data.mean, cfg.data.std),
               f"dino 2x{size} + {local_crops}x{local_size}": dino_recipe(size, local_size, local_crops, (0.4, 1.0),
                                                                       (0.05, 0.4), cfg.data.mean, cfg.data.std)}
    names = ["synthetic", "torch", "nvjpeg"] + [n for n, mod in (("dali", "nvidia.dali"), ("ffcv", "ffcv"))
                                                if importlib.util.find_spec(mod)]
    tmp, root, source = image_source(data, images)
    split, _ = scan_folder(root)
    ffcv_cfg = None
    if "ffcv" in names:  # the same images as a .beton (the converter's defaults)
        from loaders.write_beton import write_beton
        beton = Path(tmp.name if tmp else tempfile.mkdtemp()) / "train.beton"
        write_beton(root, beton, workers=workers, progress=False)
        ffcv_cfg = load_config(overrides={**{f"data.{k}": v for k, v in (("batch_size", batch), ("num_workers", workers),
                                                                          ("image_size", size))},
                                          "data.loader": "ffcv", "data.beton": str(beton)})
    rows = []
    for recipe_name, recipe in recipes.items():
        for name in names:
            kwargs = {} if name in ("synthetic", "ffcv") else {"split": split}
            ld = LOADERS.build(name, ffcv_cfg if name == "ffcv" else cfg, recipe, rank=0, world=1, device=device,
                               **kwargs)
            ld.set_epoch(0)
            it = iter(ld)
            next(it)  # start-up (worker spawn, pipeline build, first decode) is not throughput
            sync(device)
            t, n = time.perf_counter(), 0
            for b in it:
                n += b.size
                if n >= images:  # same image count for every loader (synthetic epochs are long)
                    break
            sync(device)
            secs = time.perf_counter() - t
            rows.append({"loader": name, "recipe": recipe_name, "size": size, "batch": batch,
                         "cpu_workers": workers, "images": n, "seconds": round(secs, 3),
                         "images_per_s": round(n / max(secs, 1e-9), 1),
                         "source": "random tensors on device" if name == "synthetic" else source})
            print(f"  loader {name:9s} {recipe_name:24s} {rows[-1]['images_per_s']:8.1f} img/s", file=sys.stderr)
            del it, ld
    return rows


_SOURCES: dict[int, tuple] = {}  # generated JPEG sets by image count: written once, shared by the sections


def image_source(data: str | None, images: int):
    """(temporary dir or None, folder, description): ``--data``'s train split, or generated ImageNet-like JPEGs
    (written once per process and image count; ``cleanup_sources`` removes them)."""
    from sdmp_fast.data.generate import write_jpeg_folder
    if data is not None:
        root = Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data)
        return None, root, str(root)
    if images not in _SOURCES:
        tmp = tempfile.TemporaryDirectory()
        per_class = max(1, images // 8)
        root = write_jpeg_folder(Path(tmp.name) / "train", classes=8, per_class=per_class,
                                 sizes=((500, 375), (375, 500), (500, 333), (480, 360)), quality=90)
        _SOURCES[images] = (tmp, root, f"generated: {8 * per_class} JPEGs ~500x375 q90")
    return _SOURCES[images]


def cleanup_sources() -> None:
    for tmp, _, _ in _SOURCES.values():
        tmp.cleanup()
    _SOURCES.clear()


# ----------------------------------------------------------------------------- ffcv

def _ffcv_redecode_rate(beton: Path, recipe, batch: int, workers: int, images: int, device: torch.device) -> float:
    """FFCV-SSL's design: one pipeline per view on the same image field, each decoding the JPEG again with FFCV's
    RandomResizedCrop decoder, then the flip and the same torch colour pipeline as ours (``finish_view``)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline import PipelineSpec
    from ffcv.transforms import ToTensor

    from sdmp_fast.streams import step_generator
    from sdmp_fast.augment import finish_view, sample_view_params
    pipes = {f"view{k}": PipelineSpec("image", decoder=RandomResizedCropRGBImageDecoder((v.size, v.size), v.scale,
                                                                                        v.ratio), transforms=[ToTensor()])
             for k, v in enumerate(recipe.views)}
    pipes.update(image=None, height=None, width=None, label=[IntDecoder(), ToTensor()], index=[IntDecoder(), ToTensor()])
    ld = Loader(str(beton), batch_size=batch, num_workers=workers, order=OrderOption.RANDOM, seed=0, pipelines=pipes,
                drop_last=True, batches_ahead=2)
    nviews = len(recipe.views)

    names = list(ld.pipeline_specs)  # the order of FFCV's outputs

    def views_of(out, step):
        got = dict(zip(names, out))
        crops = [got[f"view{k}"] for k in range(nviews)]
        sizes = torch.tensor([[recipe.views[0].size] * 2] * batch, device=device)
        params = sample_view_params(recipe, sizes, step_generator(0, 0, 0, step, device))
        res = []
        for crop, p, spec in zip(crops, params, recipe.views):
            x = crop.to(device).permute(0, 3, 1, 2).float().div_(255)
            x = torch.where(p.flip.view(-1, 1, 1, 1), x.flip(-1), x)
            res.append(finish_view(x, p, spec, recipe.mean, recipe.std))
        return res

    it = iter(ld)
    views_of(next(it), 0)  # compile + first batch: not throughput
    t, n = time.perf_counter(), 0
    for k, out in enumerate(it):
        views_of(out, k + 1)
        n += batch
        if n >= images:
            break
    sync(device)
    return n / max(time.perf_counter() - t, 1e-9)


def _crop_distribution(beton: Path, recipe, samples: int) -> list[dict]:
    """Crop area fraction and aspect ratio of the ffcv loader's boxes (drawn on the STORED image, longer side
    capped by --max-resolution) against the torch loader's (drawn on the original), per view spec."""
    import numpy as np

    from loaders.beton import Beton
    from sdmp_fast.augment.reference import rrc_params
    from sdmp_fast.streams import sample_generator
    from sdmp_fast.augment import sample_view_params
    b = Beton(beton)
    stored = np.stack([b.metadata["image"]["height"], b.metadata["image"]["width"]], 1).astype(np.int64)
    orig = np.stack([b.ints("height"), b.ints("width")], 1)
    b.close()
    ids = np.arange(samples) % len(stored)
    rows = []
    for spec in {v.scale: v for v in recipe.views}.values():
        ref = [rrc_params(int(orig[i, 0]), int(orig[i, 1]), spec.scale, spec.ratio, sample_generator(1, 0, k))
               for k, i in enumerate(ids)]
        ref_area = np.array([h * w / (orig[i, 0] * orig[i, 1]) for (_, _, h, w), i in zip(ref, ids)])
        ref_aspect = np.array([w / h for (_, _, h, w) in ref])
        sizes = torch.from_numpy(stored[ids])
        p = sample_view_params(type(recipe)("one", (spec,), recipe.mean, recipe.std), sizes,
                               torch.Generator().manual_seed(1))[0]
        area = (p.height * p.width).double().numpy() / (stored[ids, 0] * stored[ids, 1])
        aspect = (p.width.double() / p.height.double()).numpy()
        out = {"scale": list(spec.scale), "ratio": [round(r, 4) for r in spec.ratio], "samples": samples,
               "stored_sizes": sorted({tuple(map(int, x)) for x in stored}),
               "original_sizes": sorted({tuple(map(int, x)) for x in orig})}
        for name, a, r, lo, hi in (("area", area, ref_area, 0.0, 1.0),
                                   ("log_aspect", np.log(aspect), np.log(ref_aspect), np.log(0.7), np.log(1.45))):
            edges = np.linspace(lo, hi, 21)
            h1 = np.histogram(a, edges)[0] / len(a)
            h2 = np.histogram(r, edges)[0] / len(r)
            out[name] = {"ffcv_mean": round(float(a.mean()), 4), "torch_mean": round(float(r.mean()), 4),
                         "ffcv_std": round(float(a.std()), 4), "torch_std": round(float(r.std()), 4),
                         "total_variation_20_bins": round(0.5 * float(np.abs(h1 - h2).sum()), 4)}
        rows.append(out)
        print(f"  ffcv crops scale {spec.scale}: area mean {out['area']['ffcv_mean']} vs torch "
              f"{out['area']['torch_mean']} (TV {out['area']['total_variation_20_bins']}), log-aspect TV "
              f"{out['log_aspect']['total_variation_20_bins']}", file=sys.stderr)
    return rows


def bench_ffcv(device: torch.device, data: str | None, images: int, batch: int, workers: int, size: int,
               local_size: int = 96, local_crops: int = 8) -> dict:
    """The converter (images/s, size), the ffcv loader (decode once) against FFCV-SSL-style re-decoding per
    view, the decode / augment split, and the crop distribution against the torch loader."""
    from loaders.ffcv_loader import FfcvLoader
    from loaders.write_beton import write_beton
    from sdmp_fast.augment.recipes import dino_recipe, mocov3_recipe
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tmp, root, source = image_source(data, images)
    work = tempfile.TemporaryDirectory()
    beton = Path(work.name) / "train.beton"
    conv = write_beton(root, beton, workers=workers, progress=False)
    conv.update(source=source, max_resolution=400, write_mode="jpg", jpeg_quality=90, workers=workers,
                source_bytes=sum(f.stat().st_size for f in root.rglob("*") if f.is_file()))
    print(f"  convert {conv['images']} images: {conv['images_per_s']} img/s, {conv['bytes'] / 2**20:.1f} MiB "
          f"(source {conv['source_bytes'] / 2**20:.1f} MiB)", file=sys.stderr)
    recipes = {"mocov3 two-view": mocov3_recipe(size, 0.08, mean, std),
               f"dino 2x{size} + {local_crops}x{local_size}": dino_recipe(size, local_size, local_crops, (0.4, 1.0),
                                                                       (0.05, 0.4), mean, std)}
    rows = []
    for name, recipe in recipes.items():
        ld = FfcvLoader(str(beton), recipe, batch, 0, 1, device, seed=0, num_workers=workers)
        rates = {}
        for arm, pull in (("decode only", lambda: ld.decoded()), ("decode once + augment", lambda: iter(ld))):
            ld.set_epoch(0)
            it = pull()
            next(it)
            sync(device)
            t, n = time.perf_counter(), 0
            for _ in it:
                n += batch
                if n >= images:
                    break
            sync(device)
            rates[arm] = n / max(time.perf_counter() - t, 1e-9)
        rates["re-decode per view (FFCV-SSL style)"] = _ffcv_redecode_rate(beton, recipe, batch, workers, images, device)
        ours, theirs = rates["decode once + augment"], rates["re-decode per view (FFCV-SSL style)"]
        rows.append({"recipe": name, "batch": batch, "workers": workers, "images": images,
                     **{f"{k} img/s": round(v, 1) for k, v in rates.items()},
                     "augment_ms_per_image": round(1e3 * (1 / ours - 1 / rates["decode only"]), 2),
                     "decode_ms_per_image": round(1e3 / rates["decode only"], 2),
                     "decode_once_vs_redecode": round(ours / theirs, 2)})
        print(f"  ffcv {name:24s} decode once {ours:7.1f} img/s, re-decode per view {theirs:7.1f} img/s "
              f"({ours / theirs:.2f}x); decode only {rates['decode only']:7.1f} img/s", file=sys.stderr)
    dist = _crop_distribution(beton, recipes["mocov3 two-view"], 4000)
    work.cleanup()
    return {"convert": [conv], "loader": rows, "crop_distribution": dist}


# ----------------------------------------------------------------------------- augment

def bench_augment(device: torch.device, batch: int, size: int, local_size: int, iters: int) -> list[dict]:
    """Batched sdmp_fast.augment vs the reference loader's per-sample torchvision ops, on decoded images."""
    from sdmp_fast.augment.reference import apply_view
    from sdmp_fast.streams import sample_generator
    from sdmp_fast.augment import apply_views, sample_view_params
    from sdmp_fast.augment.recipes import dino_recipe, mocov3_recipe
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    g = torch.Generator().manual_seed(0)
    hw = [(375, 500), (500, 375), (333, 500), (360, 480)]
    imgs = [torch.randint(0, 256, (3, *hw[i % 4]), generator=g, dtype=torch.uint8) for i in range(batch)]
    canvas = torch.zeros(batch, 3, 500, 500, dtype=torch.uint8)
    for b, x in enumerate(imgs):
        canvas[b, :, :x.shape[1], :x.shape[2]] = x
    sizes = torch.tensor([list(x.shape[1:]) for x in imgs])
    canvas, sizes = canvas.to(device), sizes.to(device)
    rows = []
    recipes = {"mocov3 two-view": mocov3_recipe(size, 0.08, mean, std),
               f"dino 2x{size} + 8x{local_size}": dino_recipe(size, local_size, 8, (0.4, 1.0), (0.05, 0.4), mean, std)}
    triton_views = None
    if device.type == "cuda":  # on CPU the kernels would run in Triton's interpreter: not a throughput
        from sdmp_fast.kernels import select_apply_views
        triton_views = select_apply_views("triton")
    for name, recipe in recipes.items():
        gen = torch.Generator(device=device).manual_seed(0)
        batched = time_fn(lambda: apply_views(canvas, sizes, sample_view_params(recipe, sizes, gen), recipe),
                          device, iters=iters, warmup=1)["median_s"]
        if triton_views is not None:
            t_tri = time_fn(lambda: triton_views(canvas, sizes, sample_view_params(recipe, sizes, gen), recipe),
                            device, iters=iters, warmup=1)["median_s"]
            triton = {"triton_ms": round(t_tri * 1e3, 2), "images_per_s_triton": round(batch / t_tri, 1),
                      "triton_speedup_vs_batched": round(batched / t_tri, 2)}
        else:
            triton = {"triton": "skipped on CPU (the Triton interpreter is a correctness tool)"}
        m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

        def per_sample():
            for i, x in enumerate(imgs):
                gi = sample_generator(0, 0, i)
                [apply_view(x, spec, gi, m, s) for spec in recipe.views]
        loop = time_fn(per_sample, torch.device("cpu"), iters=max(1, iters // 2), warmup=0)["median_s"]
        rows.append({"recipe": name, "batch": batch, "size": size, "batched_ms": round(batched * 1e3, 2),
                     "per_sample_torchvision_ms": round(loop * 1e3, 2), "speedup": round(loop / batched, 2),
                     "images_per_s_batched": round(batch / batched, 1), **triton})
        print(f"  augment {name:24s} batched {batched * 1e3:8.1f} ms  per-sample {loop * 1e3:8.1f} ms  "
              f"triton {triton.get('triton_ms', 'skipped (CPU)')}", file=sys.stderr)
    return rows


# ----------------------------------------------------------------------------- mixing

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
            out[i, :, top:top + h, left:left + w] = F.interpolate(x[j:j + 1], size=(h, w), mode="bilinear", align_corners=False)[0]
    return out


def bench_mixing(device: torch.device, batch: int, size: int, iters: int) -> list[dict]:
    from sdmp_fast.mixing import mix
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    lam = torch.rand(batch, device=device, generator=g)
    clone = time_fn(lambda: x.clone(), device, warmup=1, iters=iters)["median_s"]
    triton_mix = None
    if device.type == "cuda":  # on CPU the kernel would run in Triton's interpreter: not a throughput
        from sdmp_fast.kernels import select_mix
        triton_mix = select_mix("triton")
    rows = []
    for op in ("mixup", "cutmix", "resizemix"):
        t_fast = time_fn(lambda: mix(x, lam, op, generator=g), device, warmup=1, iters=iters)["median_s"]
        t_loop = time_fn(lambda: loop_mix_reference(x, lam, op), device, warmup=1, iters=max(2, iters // 2))["median_s"]
        if triton_mix is not None:
            t_tri = time_fn(lambda: triton_mix(x, lam, op, generator=g), device, warmup=1, iters=iters)["median_s"]
            t_bf16 = time_fn(lambda: triton_mix(x, lam, op, generator=g, out_dtype=torch.bfloat16), device,
                             warmup=1, iters=iters)["median_s"]
            triton = {"triton_ms": round(1e3 * t_tri, 2), "triton_bf16_out_ms": round(1e3 * t_bf16, 2),
                      "triton_images_per_s": round(batch / t_tri, 1), "triton_speedup_vs_mix": round(t_fast / t_tri, 2)}
        else:
            triton = {"triton": "skipped on CPU (the Triton interpreter is a correctness tool)"}
        rows.append({"op": op, "batch": batch, "size": size, "mix_ms": round(1e3 * t_fast, 2), "loop_ms": round(1e3 * t_loop, 2),
                     "clone_ms": round(1e3 * clone, 2), "mix_images_per_s": round(batch / t_fast, 1),
                     "loop_images_per_s": round(batch / t_loop, 1), "speedup_vs_loop": round(t_loop / t_fast, 2),
                     "mix_over_clone": round(t_fast / clone, 2),
                     "gb_per_s": round(2 * x.numel() * x.element_size() / t_fast / 1e9, 1), **triton})
    return rows


# ----------------------------------------------------------------------------- step

def build_step_trainer(device: torch.device, method: str, backbone: str, size: int, batch: int,
                       overrides: dict | None = None, past_first_epoch: bool = False):
    """(cfg, trainer, views, recipe): a Trainer on the synthetic loader (compute only) and one batch of its views,
    at a step past the lr warm-up (``past_first_epoch``: also past DINO's first-epoch last-layer freeze)."""
    import loaders  # noqa: F401
    from sdmp_fast.config import load_config, resolve
    from sdmp_fast.engine.trainer import Trainer
    from sdmp_fast.methods import build_method
    from sdmp_fast.methods.base import method_recipe
    from sdmp_fast.models import build_backbone
    from sdmp_fast.registry import LOADERS
    cfg = load_config(overrides={"method.name": method, "model.backbone": backbone, "data.image_size": size,
                                 "data.batch_size": batch, "run.max_steps": 10_000, **(overrides or {})})
    torch.manual_seed(0)
    model = build_method(cfg, build_backbone(cfg)).to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    recipe = method_recipe(cfg)
    ld = LOADERS.build("synthetic", cfg, recipe, rank=0, world=1, device=device)
    res = resolve(cfg, ld.num_samples)
    trainer = Trainer(cfg, res, model, ld, device, Path(tempfile.gettempdir()))
    views = next(iter(ld)).views
    trainer.step = res.warmup_steps + 1 + (res.steps_per_epoch if past_first_epoch else 0)  # lr > 0
    return cfg, trainer, views, recipe


def bench_step(device: torch.device, method: str, backbone: str, size: int, batch: int, iters: int,
               overrides: dict | None = None, warmup: int = 2) -> list[dict]:
    """Median step time of ``method`` without and with SDMP (same views), and their ratio."""
    rows = []
    for sdmp in (False, True):
        _, trainer, views, recipe = build_step_trainer(device, method, backbone, size, batch,
                                                       {"sdmp.enabled": sdmp, **(overrides or {})})
        start = trainer.step

        def one():
            trainer.step = start
            trainer.train_step(views)
        t = time_fn(one, device, warmup=warmup, iters=iters)["median_s"]
        rows.append({"method": method + ("+sdmp" if sdmp else ""), "backbone": backbone, "views": list(recipe.sizes),
                     "batch": batch, "precision": str(trainer.dtype).replace("torch.", ""), "step_ms": round(1e3 * t, 1),
                     "images_per_s": round(batch / t, 1)})
    rows.append({"method": method, "ratio_sdmp_over_plain": round(rows[1]["step_ms"] / rows[0]["step_ms"], 3)})
    return rows


# ----------------------------------------------------------------------------- step: modes, FLOPs, MFU

# Each mode of the training step is a set of RunConfig overrides. A build whose RunConfig lacks the switch
# raises ConfigError("... unknown key ..."): that row then reads "not available in this build".
# "unfused": the eager step with one encoder forward per view (run.fused=false), to show what fusing gains
MODES = {"eager": {}, "unfused": {"run.fused": False}, "compile": {"run.compile": True}, "graph": {"run.cuda_graph": True}}
NOT_AVAILABLE = "not available in this build"
SDMP_STEP_TARGET = 0.9      # MoCo v3 + SDMP step rate >= 0.9 x (single-view forward+backward rate) / 3
GRAPH_TARGET = 1.2          # graph / eager at small batches
SMALL_BATCH = 64            # "small batches" of the graph target: 32 and 64
DALI_TARGET = 0.9           # end-to-end dali >= 0.9 x synthetic
AIM_IMAGES_PER_S, AIM_MFU = 4000, 0.40  # long-range aim per H100, ViT-S MoCo v3 + SDMP
COMPILE_MARGIN_S = 120.0    # --budget-s: a compile arm starts only with this much time left


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

    from sdmp_fast.models import build_backbone
    with torch.device("meta"):
        backbone = build_backbone(cfg)
        x = torch.empty(batch, 3, cfg.data.image_size, cfg.data.image_size)
    with FlopCounterMode(display=False) as counter:
        backbone(x).float().sum().backward()
    return counter.get_total_flops()


def bench_single_view(device: torch.device, cfg, batch: int, dtype: torch.dtype, timing: dict) -> dict:
    """images/s of one forward+backward of ``model.backbone`` on one view [B, 3, H, W]: channels-last, the step's
    autocast dtype, gradients set to None each call (no optimizer)."""
    import contextlib

    from sdmp_fast.models import build_backbone
    torch.manual_seed(0)
    backbone = build_backbone(cfg).to(device)
    if cfg.model.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    backbone.train()
    size = cfg.data.image_size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    def one():
        backbone.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with ctx:
            out = backbone(x)
        out.float().sum().backward()
    t = time_loop(one, device, **timing)
    flops, attention = count_flops(one)
    row = {"backbone": cfg.model.backbone, "size": size, "batch": batch, "status": "ok",
           "precision": str(dtype).replace("torch.", ""),
           "channels_last": cfg.model.channels_last, "fwd_bwd_ms": round(1e3 * t["median_s"], 2),
           "images_per_s": round(batch / t["median_s"], 1), "flops_fwd_bwd": flops, "attention_flops": attention}
    try:
        meta = row["flops_fwd_bwd_meta"] = meta_fwd_bwd_flops(cfg, batch)
        # on meta SDPA runs as plain matmuls (2 forward, 4 backward); the flash formulas also count the backward's
        # recomputation of QK^T, one seventh of the attention FLOPs (2 forward + 5 backward, equal head dims)
        expected = flops - attention // 7
        row["meta_check"] = ("equal to the count less the flash backward's QK^T recompute" if meta == expected else
                             f"differs from the count less the QK^T recompute by {meta - expected}")
    except Exception as e:  # noqa: BLE001 - the cross-check is optional: say why it is missing
        row["flops_fwd_bwd_meta"] = f"failed: {type(e).__name__}: {e}"
    return row


def mode_skip_reason(mode: str, device: torch.device, compile_on_cpu: bool, batch: int,
                     compile_batches: list[int] | None) -> str | None:
    """Why ``mode`` does not run here (None: it runs)."""
    if mode not in MODES:
        return f"unknown mode {mode!r}; choose from {', '.join(MODES)}"
    if mode == "graph" and device.type != "cuda":
        return "skipped: CUDA only (run.cuda_graph captures a CUDA graph)"
    if mode == "compile" and device.type != "cuda" and not compile_on_cpu:
        return "skipped on CPU: torch.compile (inductor) is slow on few cores; pass --compile to run it"
    if mode == "compile" and compile_batches is not None and batch not in compile_batches:
        return f"skipped: compile runs at --compile-batches {','.join(map(str, compile_batches))} only (compile time)"
    return None


def _time_mode(device: torch.device, method: str, backbone: str, size: int, batch: int, overrides: dict, mode: str,
               timing: dict, with_flops: bool) -> dict:
    """One mode arm: build the trainer with the mode's switches, time back-to-back steps, count FLOPs (eager)."""
    from sdmp_fast.config import ConfigError
    try:
        cfg, trainer, views, recipe = build_step_trainer(device, method, backbone, size, batch,
                                                         {"sdmp.enabled": True, **overrides, **MODES[mode]},
                                                         past_first_epoch=True)
    except ConfigError as e:
        if "unknown key" in str(e):
            return {"status": f"{NOT_AVAILABLE} (ConfigError: {e})"}
        raise
    t = time_loop(lambda: trainer.train_step(views), device, **timing)
    row = {"status": "ok", "views": list(recipe.sizes), "precision": str(trainer.dtype).replace("torch.", ""),
           "fused": getattr(cfg.run, "fused", None), "switches": MODES[mode],
           "step_ms": round(1e3 * t["median_s"], 2), "step_ms_min": round(1e3 * t["min_s"], 2),
           "images_per_s": round(batch / t["median_s"], 1), "timing": {k: t[k] for k in ("warmup", "steps", "repeats")}}
    if with_flops:  # model FLOPs are the same in every mode: counted once, on the eager step
        try:
            row["flops_per_step"], row["attention_flops_per_step"] = count_flops(lambda: trainer.train_step(views))
        except Exception as e:  # noqa: BLE001 - the timing stands without the count; say why MFU is missing
            row["flops_per_step"], row["flops_error"] = None, f"{type(e).__name__}: {e}"
    return row


def free_device(device: torch.device) -> None:
    """Drop the previous arm's trainer (and its CUDA graph pool / compiled code) before the next arm."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def bench_step_modes(device: torch.device, setups: list[tuple], batches: list[int], modes: list[str], timing: dict,
                     peak: dict, compile_on_cpu: bool, compile_batches: list[int] | None, failures: list[str],
                     deadline: float | None = None) -> dict[str, list[dict]]:
    """Per (method + SDMP, batch): each mode's step time, images/s, speedup over eager, FLOPs and MFU; the
    backbone's single-view forward+backward rate; and the target ratio of MoCo v3 + SDMP.

    Runs the single views first, then mode by mode (eager first, compile - the slowest to start - last), so that
    past ``deadline`` (time.monotonic()) the arms left out are the optional ones; they read "skipped: past ...".
    """
    from sdmp_fast.config import load_config
    from sdmp_fast.engine.precision import autocast_dtype
    _, how = attention_flop_formulas()
    counted = ("FlopCounterMode on the real CUDA step" if device.type == "cuda" else
               "FlopCounterMode on the real CPU step, attention by " + how)
    # an arm starts only while the budget has room for it: compile arms need about two minutes (compile + timing)
    over = lambda margin=0.0: deadline is not None and time.monotonic() + margin > deadline  # noqa: E731
    late = "skipped: past the --budget-s time budget"
    singles = {}
    for si, (method, backbone, size, overrides) in enumerate(setups):
        for batch in batches:
            if over():
                singles[si, batch] = {"backbone": backbone, "size": size, "batch": batch, "status": late}
                continue
            try:
                cfg = load_config(overrides={"method.name": method, "model.backbone": backbone, "data.image_size": size,
                                             "data.batch_size": batch, **overrides})
                single = bench_single_view(device, cfg, batch, autocast_dtype(cfg.run.precision, device), timing)
                rate = single["flops_fwd_bwd"] / (single["fwd_bwd_ms"] / 1e3)
                single.update(flops_counted=counted, peak=peak["name"], mfu=round(rate / peak["flops_per_s"], 4))
            except Exception as e:  # noqa: BLE001 - one failed arm is reported; the others still run
                traceback.print_exc()
                single = {"backbone": backbone, "size": size, "batch": batch,
                          "status": f"failed: {type(e).__name__}: {e}"}
                failures.append(f"single view {backbone} batch {batch}: {type(e).__name__}: {e}")
            free_device(device)
            singles[si, batch] = single
            print(f"  single view {backbone} batch {batch}: {single.get('images_per_s', '-')} img/s "
                  f"({single['status']})", file=sys.stderr)
    arms = {}
    order = sorted(modes, key=lambda m: (m != "eager", m == "compile"))  # stable: otherwise as given
    for mode in order:
        for si, (method, backbone, size, overrides) in enumerate(setups):
            for batch in batches:
                row = {"method": method + "+sdmp", "backbone": backbone, "size": size, "mode": mode, "batch": batch}
                arms[si, batch, mode] = row
                skip = mode_skip_reason(mode, device, compile_on_cpu, batch, compile_batches)
                skip = skip or (late if over(COMPILE_MARGIN_S if mode == "compile" else 0.0) else None)
                if skip:
                    row["status"] = skip
                    continue
                label = f"step {method}+sdmp {backbone} {mode} batch {batch}"
                try:
                    row.update(_time_mode(device, method, backbone, size, batch, overrides, mode, timing,
                                          with_flops=mode == "eager"))
                except Exception as e:  # noqa: BLE001 - one failed arm is reported; the others still run
                    traceback.print_exc()
                    row["status"] = f"failed: {type(e).__name__}: {e}"
                    failures.append(f"{label}: {type(e).__name__}: {e}")
                finally:
                    if mode == "compile":
                        torch.compiler.reset()  # else each new trainer counts towards dynamo's recompile limit
                    free_device(device)
                print(f"  {label}: {row.get('step_ms', '-')} ms, {row.get('images_per_s', '-')} img/s "
                      f"({row['status']})", file=sys.stderr)
    rows, targets = [], []
    for si, (method, backbone, size, overrides) in enumerate(setups):
        for batch in batches:
            group = [arms[si, batch, m] for m in modes]
            rows += group
            ok = {r["mode"]: r for r in group if r["status"] == "ok"}
            flops = ok["eager"].get("flops_per_step") if "eager" in ok else None
            for r in ok.values():
                if "eager" in ok:
                    r["speedup_vs_eager"] = round(ok["eager"]["step_ms"] / r["step_ms"], 3)
                if flops:
                    achieved = flops / (r["step_ms"] / 1e3)
                    r.update(flops_per_step=flops, flops_counted=counted, achieved_tflops=round(achieved / 1e12, 4),
                             mfu=round(achieved / peak["flops_per_s"], 4), peak=peak["name"])
            single = singles[si, batch]
            if method != "mocov3" or "images_per_s" not in single:
                continue  # the / 3 rule is MoCo v3 + SDMP's: two student forward+backward, three teacher forwards
            for r in ok.values():
                ratio = r["images_per_s"] / (single["images_per_s"] / 3)
                targets.append({"method": r["method"], "backbone": backbone, "batch": batch, "mode": r["mode"],
                                "sdmp_step_images_per_s": r["images_per_s"],
                                "single_view_fwd_bwd_images_per_s": single["images_per_s"],
                                "ratio_step_over_single_view_third": round(ratio, 3),
                                "target": f">= {SDMP_STEP_TARGET}", "met": ratio >= SDMP_STEP_TARGET})
    return {"step_modes": rows, "single_view": list(singles.values()), "step_targets": targets}


# DINO arms: the Fashion-MNIST CPU configuration (2 x 32 px + 4 x 16 px, small head) and DINO's ImageNet shape.
DINO_CPU = {"data.local_crops": 4, "data.local_size": 16, "method.dino_out_dim": 4096, "method.dino_hidden_dim": 512,
            "method.dino_bottleneck_dim": 128, "optim.clip_grad": 3.0, "optim.clip_mode": "per_param",
            "optim.weight_decay_end": 0.4}
DINO_QUICK = dict(DINO_CPU, **{"data.local_crops": 2, "method.dino_out_dim": 256, "method.dino_hidden_dim": 64,
                               "method.dino_bottleneck_dim": 32})
DINO_GPU = dict(DINO_CPU, **{"data.local_crops": 8, "data.local_size": 96, "method.dino_out_dim": 65536,
                             "method.dino_hidden_dim": 2048, "method.dino_bottleneck_dim": 256})


# ----------------------------------------------------------------------------- e2e

E2E_ORDER = ("synthetic", "torch", "dali", "nvjpeg", "ffcv")  # then any other registered loader


def replicate_folder(src: Path, dst: Path, n: int) -> tuple[Path, int]:
    """(folder, files): ``dst/<class>_r<k>/`` hard links (copies across file systems) of ``src``'s images until there
    are at least ``n``: an epoch long enough for the measured steps without generating that many distinct JPEGs."""
    import shutil
    files = sorted(f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"{src}: no JPEG files to replicate")
    copies = max(1, math.ceil(n / len(files)))
    for k in range(copies):
        for f in files:
            out = dst / f"{f.parent.name}_r{k}" / f.name
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, out)
            except OSError:
                shutil.copyfile(f, out)
    return dst, copies * len(files)


def e2e_rate(metrics: Path, warmup: int, batch: int) -> dict:
    """images/s between the log point at the end of the warm-up and the last one (run.log_every = warm-up steps), from
    the run's metrics.jsonl: the loader's prefetching, the step and the periodic log read all count; the final
    checkpoint is written after the last log point and does not."""
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    after = [x for x in lines if x["step"] >= warmup]
    if len(after) < 2:
        raise RuntimeError(f"{metrics}: fewer than two log points after the warm-up ({len(lines)} lines)")
    a, b = after[0], after[-1]
    return {"images_per_s": round((b["step"] - a["step"]) * batch / max(b["elapsed_s"] - a["elapsed_s"], 1e-9), 1),
            "window_images_per_s": [round(x["images_per_s"], 1) for x in after[1:]],
            "warmup_images_per_s": round(lines[0]["images_per_s"], 1), "measured_steps": b["step"] - a["step"]}


def bench_e2e(device: torch.device, names: list[str], data: str | None, unique_images: int, batch: int,
              config: str | None, overrides: list[str], warmup: int, steps: int, workers: int,
              failures: list[str], deadline: float | None = None) -> list[dict]:
    """MoCo v3 + SDMP trained by ``sdmp_fast.pretrain.run`` (``--config config``, then ``overrides``) with each
    loader: images/s after the warm-up, and each loader's rate as a fraction of the synthetic (compute-only) rate."""
    import loaders  # noqa: F401
    from sdmp_fast import pretrain
    from sdmp_fast.registry import LOADERS, MissingBackend
    warmup = max(1, warmup)
    stop = warmup + max(1, math.ceil(steps / warmup)) * warmup  # log points at every warm-up multiple
    work = tempfile.TemporaryDirectory()
    cache = Path(work.name) / "cache"
    folder, source, beton = None, None, None
    rows = []
    for name in names:
        row = {"loader": name, "method": "mocov3+sdmp", "batch": batch, "warmup_steps": warmup}
        if name not in LOADERS:
            rows.append({**row, "status": f"unknown loader {name!r}; registered: {', '.join(LOADERS.names())}"})
            continue
        if deadline is not None and time.monotonic() > deadline:
            rows.append({**row, "status": "skipped: past the --budget-s time budget"})
            continue
        label = f"e2e {name}"
        t0 = time.perf_counter()
        try:
            opts = ["--loader", name, "--out", str(Path(work.name) / f"run-{name}")]
            opts += ["--config", config] if config else []
            args = [*overrides, f"run.device={device}", f"data.batch_size={batch}", f"data.num_workers={workers}",
                    f"data.dali_threads={workers}", f"data.cache_dir={cache}", "method.name=mocov3", "sdmp.enabled=true", "run.knn=false",
                    "run.checkpoint_minutes=0", f"run.log_every={warmup}", f"run.stop_after={stop}",
                    f"run.max_steps={max(100_000, stop)}"]
            if name in pretrain.FOLDERLESS_LOADERS:
                row["source"] = "random tensors on device (compute-only ceiling)"
            else:
                if folder is None:
                    if data is not None:
                        _, folder, source = image_source(data, unique_images)
                    else:
                        _, src, desc = image_source(None, unique_images)
                        folder, n = replicate_folder(src, Path(work.name) / "images", (stop + 1) * batch)
                        source = f"{desc}, hard-linked into {n} files (one epoch covers the run)"
                opts += ["--data", str(folder)]
                row["source"] = source
                if name == "ffcv":
                    if importlib.util.find_spec("ffcv") is None:
                        rows.append({**row, "status": "skipped: ffcv is not installed (pip install -e .[ffcv]); "
                                                      "it reads a .beton written by ffcv's writer"})
                        continue
                    if beton is None:
                        from loaders.write_beton import write_beton
                        beton = Path(work.name) / "train.beton"
                        write_beton(folder, beton, workers=workers, cache_dir=str(cache), progress=False)
                    args.append(f"data.beton={beton}")
                    row["source"] = f"{source}; as a .beton (loaders.write_beton defaults: max-resolution 400, jpg)"
            summary = pretrain.run(opts + args, progress=False)
            rate = e2e_rate(Path(summary["out_dir"]) / "metrics.jsonl", warmup, batch)
            row.update(status="ok", **rate, fit_images_per_s=summary["images_per_s"], workers=workers,
                       wall_s=round(time.perf_counter() - t0, 1))
        except MissingBackend as e:
            row["status"] = f"skipped: {e}"
        except (Exception, SystemExit) as e:  # noqa: BLE001 - one failed loader is reported; the others still run
            traceback.print_exc()
            row["status"] = f"failed: {type(e).__name__}: {e}"
            failures.append(f"{label}: {type(e).__name__}: {e}")
        finally:
            free_device(device)
        rows.append(row)
        print(f"  e2e {name:9s} {row.get('images_per_s', '-')} img/s ({row['status']})", file=sys.stderr)
    synthetic = next((r["images_per_s"] for r in rows if r["loader"] == "synthetic" and r["status"] == "ok"), None)
    for r in rows:
        if r["status"] == "ok" and synthetic:
            r["fraction_of_synthetic"] = round(r["images_per_s"] / synthetic, 3)
    work.cleanup()
    return rows


# ----------------------------------------------------------------------------- report

def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"
    if isinstance(v, int) and abs(v) >= 10 ** 7:
        return f"{v:.4e}"
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, default=str)
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    """A Markdown table of ``rows``: the given columns, or every key in first-seen order; a missing value is blank."""
    if not rows:
        return ["(no rows)"]
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    out += ["| " + " | ".join(_fmt(r[c]) if c in r else "" for c in columns) + " |" for r in rows]
    return out


def evaluate_targets(out: dict) -> list[dict]:
    """The issue's targets, each with the figure it is judged on and met = yes / no / None (not measured here)."""
    res, gpu = out["results"], out["env"]["device"].startswith("cuda")
    where = "" if gpu else "CPU figure; the target is set for a GPU"
    targets = []
    e2e = {r["loader"]: r for r in res.get("e2e", [])}
    dali = e2e.get("dali", {})
    targets.append({"target": f"end-to-end dali >= {DALI_TARGET} x synthetic", "figure":
                    dali.get("fraction_of_synthetic", dali.get("status", "dali not run")),
                    "met": dali["fraction_of_synthetic"] >= DALI_TARGET if "fraction_of_synthetic" in dali else None,
                    "note": where})
    for t in res.get("step_targets", []):
        targets.append({"target": f"MoCo v3 + SDMP step >= {SDMP_STEP_TARGET} x single-view fwd+bwd rate / 3 "
                                  f"({t['backbone']}, batch {t['batch']}, {t['mode']})",
                        "figure": t["ratio_step_over_single_view_third"], "met": t["met"], "note": where})
    modes = [r for r in res.get("step_modes", []) if r.get("status") == "ok"]
    for r in modes:
        if r["mode"] != "graph" or "speedup_vs_eager" not in r:
            continue
        small = r["batch"] <= SMALL_BATCH
        targets.append({"target": f"graph >= {GRAPH_TARGET} x eager at small batches ({r['method']}, {r['backbone']}, "
                                  f"batch {r['batch']})", "figure": r["speedup_vs_eager"],
                        "met": r["speedup_vs_eager"] >= GRAPH_TARGET if small else None,
                        "note": "" if small else "reported (the target is for batches <= 64)"})
    graph_rows = [r for r in res.get("step_modes", []) if r.get("mode") == "graph"]
    if graph_rows and not any(r.get("status") == "ok" for r in graph_rows):
        targets.append({"target": f"graph >= {GRAPH_TARGET} x eager at small batches", "met": None,
                        "figure": graph_rows[0]["status"], "note": ""})
    vit_s = [r for r in modes if r["method"] == "mocov3+sdmp" and r["backbone"] == "vit_small"]
    best = max(vit_s, key=lambda r: r["images_per_s"], default=None)
    targets.append({"target": f"aim: >= {AIM_IMAGES_PER_S} images/s per GPU, ViT-S MoCo v3 + SDMP", "met":
                    best["images_per_s"] >= AIM_IMAGES_PER_S if best else None,
                    "figure": f"{best['images_per_s']} ({best['mode']}, batch {best['batch']})" if best else
                    "not measured (no ViT-S row: it runs on CUDA without --quick)", "note": ""})
    best = max((r for r in vit_s if "mfu" in r), key=lambda r: r["mfu"], default=None)
    targets.append({"target": f"aim: about {AIM_MFU:.0%} MFU, ViT-S MoCo v3 + SDMP", "met":
                    best["mfu"] >= AIM_MFU if best else None,
                    "figure": f"{best['mfu']} ({best['mode']}, batch {best['batch']}; {best['peak']})" if best else
                    "not measured (no ViT-S row: it runs on CUDA without --quick)", "note": ""})
    return targets


def write_report(out: dict, path: str | Path) -> Path:
    """Markdown: machine and versions, peak, step modes with MFU, single-view target, end-to-end, every other
    section's rows, the targets and the failures."""
    env, res = out["env"], out["results"]
    lines = ["# Throughput report", "",
             f"`python benchmarks/throughput.py {' '.join(out.get('argv', []))}`, {env.get('date')}, "
             f"device {env.get('gpu') or env.get('device')}. Every figure comes from this one run; "
             "the JSON beside it holds the same rows.", "",
             "## Machine and versions", ""]
    lines += md_table([{"key": k, "value": v} for k, v in env.items()])
    lines += ["", "## Targets", ""]
    lines += md_table([{**t, "met": {True: "met", False: "NOT met", None: "not measured"}[t["met"]]}
                       for t in out.get("targets", [])], ["target", "figure", "met", "note"])
    if "peak" in res:
        lines += ["", "## Peak (the MFU denominator)", ""] + md_table(res["peak"])
    if "step_modes" in res:
        lines += ["", "## Training step: eager / unfused / compile / graph", "",
                  "Synthetic views (compute only). `speedup_vs_eager` = eager step time / this mode's step time; "
                  "`mfu` = FLOPs per step (counted on the eager step) / step time / the peak named in `peak`.", ""]
        lines += md_table(res["step_modes"], ["method", "backbone", "size", "mode", "batch", "status", "step_ms",
                                              "images_per_s", "speedup_vs_eager", "flops_per_step", "achieved_tflops",
                                              "mfu", "precision", "fused"])
        counted = next((r["flops_counted"] for r in res["step_modes"] if "flops_counted" in r), None)
        if counted:
            lines += ["", f"FLOPs: {counted}. Peak: {res['peak'][0]['name'] if res.get('peak') else 'not measured'}."]
    if "single_view" in res:
        lines += ["", "## Single-view forward+backward and the SDMP step target", "",
                  "The backbone alone on one view (same batch, precision, channels-last), gradients but no optimizer; "
                  "`flops_fwd_bwd_meta`: the same pass counted on the meta device (the cross-check of the attention "
                  "count).", ""]
        lines += md_table(res["single_view"], ["backbone", "size", "batch", "status", "precision", "channels_last",
                                               "fwd_bwd_ms", "images_per_s", "flops_fwd_bwd", "attention_flops",
                                               "flops_fwd_bwd_meta", "meta_check", "mfu"])
        lines += ["", "Target: MoCo v3 + SDMP step rate / (single-view rate / 3) >= 0.9.", ""]
        lines += md_table(res.get("step_targets", []))
    if "e2e" in res:
        lines += ["", "## End-to-end training (MoCo v3 + SDMP through sdmp_fast.pretrain)", "",
                  "images/s between the end of the warm-up and the last log point of the run's metrics.jsonl; "
                  "`fraction_of_synthetic` = this loader's rate / the synthetic loader's.", ""]
        lines += md_table(res["e2e"], ["loader", "status", "images_per_s", "fraction_of_synthetic", "batch",
                                       "warmup_steps", "measured_steps", "window_images_per_s", "warmup_images_per_s",
                                       "fit_images_per_s", "workers", "wall_s", "source"])
    for section, rows in res.items():
        if section in ("peak", "step_modes", "single_view", "step_targets", "e2e"):
            continue
        lines += ["", f"## {section}", ""] + md_table(rows if isinstance(rows, list) else [rows])
    lines += ["", "## Failures", ""] + ([f"- {f}" for f in out.get("failures", [])] or ["none"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- main

def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=None, help="ImageNet-style folder for the loader and e2e benchmarks "
                                                "(default: generated)")
    p.add_argument("--images", type=int, default=320, help="generated JPEGs for the loader benchmark (and distinct "
                                                           "images of the e2e set)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--json", default=None, help="write results here (default: benchmarks/results/throughput-<device>.json)")
    p.add_argument("--report", default=None, help="also write the results as a Markdown report here")
    p.add_argument("--budget-s", type=float, default=None, help="time budget in seconds from the start: step-mode "
                   "arms (compile last) and e2e loaders that would start later are listed as skipped")
    p.add_argument("--step-batches", default=None, help="step modes: comma list of batch sizes (default: CUDA "
                                                        "32,64,128,256; CPU 64, --quick 16)")
    p.add_argument("--step-modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--compile", action="store_true", help="run the compile mode on CPU too (always on CUDA)")
    p.add_argument("--compile-batches", default=None, help="compile mode only at these batches (default: all of "
                                                           "--step-batches; each batch compiles anew)")
    p.add_argument("--e2e-loaders", default=None, help=f"comma list (default: every registered loader, "
                                                       f"{', '.join(E2E_ORDER)} first)")
    p.add_argument("--e2e-steps", type=int, default=None, help="measured steps per loader (default: CUDA 30, CPU 12, "
                                                               "--quick 4)")
    p.add_argument("--e2e-warmup", type=int, default=None, help="warm-up steps per loader, also the log interval "
                                                                "(default: CUDA 10, CPU 4, --quick 2)")
    p.add_argument("--e2e-batch", type=int, default=None, help="global batch for e2e (default: CUDA 128, CPU 64, "
                                                               "--quick 16)")
    p.add_argument("--e2e-workers", type=int, default=None, help="torch loader workers / DALI threads for e2e "
                                                                 "(default: CUDA all cores, CPU --workers)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    gpu = device.type == "cuda"
    out = {"env": env_record(device), "argv": list(sys.argv[1:] if argv is None else argv), "results": {},
           "failures": []}
    failures = out["failures"]
    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    print(json.dumps(out["env"]))

    def section(name: str, fn) -> None:
        """Run one section; a crash is recorded (and the report still written) instead of ending the run."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            failures.append(f"section {name}: {type(e).__name__}: {e}")
            free_device(device)

    def loaders_section():
        size, batch = (64, 16) if args.quick else (224, 32)
        out["results"]["loaders"] = bench_loaders(device, args.data, 64 if args.quick else args.images, batch,
                                                  args.workers, size, local_size=size * 96 // 224)
        rate = {(r["loader"], r["recipe"]): r["images_per_s"] for r in out["results"]["loaders"]}
        for (name, recipe), v in rate.items():
            if name in ("dali", "nvjpeg", "ffcv") and rate.get(("torch", recipe)):
                print(f"  {name} / torch, {recipe}: {v / rate[('torch', recipe)]:.2f}x", file=sys.stderr)

    def ffcv_section():
        if importlib.util.find_spec("ffcv") is None:
            out["results"]["ffcv"] = [{"status": "skipped: ffcv is not installed (pip install -e .[ffcv])"}]
            return
        size, batch = (64, 16) if args.quick else (224, 32)
        for key, rows in bench_ffcv(device, args.data, 64 if args.quick else args.images, batch, args.workers, size,
                                    local_size=size * 96 // 224).items():
            out["results"][f"ffcv_{key}"] = rows

    def augment_section():
        batch, size = (8, 64) if args.quick else ((256 if gpu else 32), 224)
        out["results"]["augment"] = bench_augment(device, batch, size, size * 96 // 224, iters=2 if args.quick else 5)

    def mixing_section():
        batch, size = (16, 64) if args.quick else (256, 224)
        out["results"]["mixing"] = bench_mixing(device, batch, size, iters=3 if args.quick else (20 if gpu else 5))

    def step_section():
        out["results"]["step"] = []
        if args.quick:
            out["results"]["step"] += bench_step(device, "mocov3", "vit_tiny_p4", 32, 16, 2, {"method.hidden_dim": 256},
                                                 warmup=1)
            out["results"]["step"] += bench_step(device, "dino", "vit_tiny_p4_dino", 32, 16, 2, DINO_QUICK, warmup=1)
        else:
            out["results"]["step"] += bench_step(device, "mocov3", "vit_tiny_p4", 32, 64, 5, {"method.hidden_dim": 1024})
            out["results"]["step"] += bench_step(device, "dino", "vit_tiny_p4_dino", 32, 64, 5, DINO_CPU)
            if gpu:
                out["results"]["step"] += bench_step(device, "mocov3", "vit_small", 224, 128, 10, {"method.hidden_dim": 4096})
                out["results"]["step"] += bench_step(device, "dino", "vit_small_dino", 224, 64, 10, DINO_GPU)

    def step_modes_section():
        peak = measure_peak(device, args.quick)
        out["results"]["peak"] = [{k: v for k, v in peak.items() if k != "flops_per_s"}]
        print(f"  peak: {peak['name']}", file=sys.stderr)
        if args.quick:
            setups = [("mocov3", "vit_tiny_p4", 32, {"method.hidden_dim": 256}),
                      ("dino", "vit_tiny_p4_dino", 32, DINO_QUICK)]
        elif gpu:
            setups = [("mocov3", "vit_small", 224, {"method.hidden_dim": 4096}),
                      ("dino", "vit_small_dino", 224, DINO_GPU)]
        else:
            setups = [("mocov3", "vit_tiny_p4", 32, {"method.hidden_dim": 1024}),
                      ("dino", "vit_tiny_p4_dino", 32, DINO_CPU)]
        batches = (_ints(args.step_batches) if args.step_batches else
                   ([32] if args.quick else [32, 64, 128, 256]) if gpu else [16 if args.quick else 64])
        timing = (dict(warmup=8, steps=10, repeats=3) if gpu and not args.quick else
                  dict(warmup=3, steps=3, repeats=2) if gpu else
                  dict(warmup=1, steps=2, repeats=2) if args.quick else dict(warmup=2, steps=3, repeats=3))
        modes = [m.strip() for m in args.step_modes.split(",") if m.strip()]
        out["results"].update(bench_step_modes(
            device, setups, batches, modes, timing, peak, args.compile,
            _ints(args.compile_batches) if args.compile_batches else None, failures, deadline))

    def e2e_section():
        import loaders  # noqa: F401
        from sdmp_fast.registry import LOADERS
        names = ([n.strip() for n in args.e2e_loaders.split(",") if n.strip()] if args.e2e_loaders else
                 [n for n in E2E_ORDER if n in LOADERS] + [n for n in LOADERS.names() if n not in E2E_ORDER])
        if gpu and not args.quick:
            config = Path(__file__).resolve().parent.parent / "configs" / "mocov3_sdmp_vit_s.yaml"
            batch, overrides, (warmup, steps) = 128, [], (10, 30)  # the ViT-S/16 recipe at 224 px
            workers = args.e2e_workers if args.e2e_workers is not None else (os.cpu_count() or args.workers)
        else:
            batch, config = (16 if args.quick else 64), None
            overrides = ["model.backbone=vit_tiny_p4", "data.image_size=32",
                    f"method.hidden_dim={256 if args.quick else 1024}"]
            warmup, steps = (2, 4) if args.quick else (4, 12)
            workers = args.e2e_workers if args.e2e_workers is not None else args.workers
        out["results"]["e2e"] = bench_e2e(device, names, args.data, 16 if args.quick else args.images,
                                          args.e2e_batch or batch, str(config) if config else None, overrides,
                                          args.e2e_warmup or warmup, args.e2e_steps or steps, workers, failures,
                                          deadline)

    # e2e before the step modes: under --budget-s the arms left out are the step modes' last ones (compile)
    for name, fn in (("loaders", loaders_section), ("ffcv", ffcv_section), ("augment", augment_section),
                     ("mixing", mixing_section), ("step", step_section), ("e2e", e2e_section),
                     ("step", step_modes_section)):
        if name in only:
            section(name, fn)
    cleanup_sources()
    out["targets"] = evaluate_targets(out)
    for name, rows in out["results"].items():
        print(f"== {name}")
        for r in rows:
            print("  " + json.dumps(r, default=str))
    print("== targets")
    for t in out["targets"]:
        print("  " + json.dumps(t, default=str))
    if failures:
        print("== failures\n  " + "\n  ".join(failures))
    path = Path(args.json) if args.json else Path(__file__).parent / "results" / f"throughput-{device.type}.json"
    write_json(path, out)
    print(f"wrote {path}")
    if args.report:
        print(f"wrote {write_report(out, args.report)}")
    return out


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
