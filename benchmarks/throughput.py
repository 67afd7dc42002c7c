"""Throughput benchmarks: the one entry point.

    python benchmarks/throughput.py [--only loaders,augment,mixing,step] [--device auto|cpu|cuda] [--json PATH]

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
* ``step``: training-step time of each method (MoCo v3; DINO with the same multi-crop views) with and
  without SDMP on synthetic views (compute only), and the ratio SDMP / plain per method. SDMP adds one
  momentum-encoder forward for MoCo v3 and one teacher forward on B global images for DINO; the
  student cost is unchanged.

Results are printed and written as JSON with the environment record (machine, versions, commit).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import env_record, sync, time_fn, write_json  # noqa: E402

SECTIONS = ("loaders", "ffcv", "augment", "mixing", "step")


# ----------------------------------------------------------------------------- loaders

def bench_loaders(device: torch.device, data: str | None, images: int, batch: int, workers: int, size: int,
                  local_size: int = 96, local_crops: int = 8) -> list[dict]:
    """images/s of every loader for MoCo v3's two views and DINO's multi-crop, same CPU threads for each."""
    import importlib.util

    import loaders  # noqa: F401
    from sdmp_fast.config import load_config
    from sdmp_fast.datasets import scan_folder
    from sdmp_fast.registry import LOADERS
    from sdmp_fast.views import dino_recipe, mocov3_recipe
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
    if tmp is not None:
        tmp.cleanup()
    return rows


def image_source(data: str | None, images: int):
    """(temporary dir or None, folder, description): ``--data``'s train split, or generated ImageNet-like JPEGs."""
    from sdmp_fast.datasets import write_jpeg_folder
    if data is not None:
        root = Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data)
        return None, root, str(root)
    tmp = tempfile.TemporaryDirectory()
    per_class = max(1, images // 8)
    root = write_jpeg_folder(Path(tmp.name) / "train", classes=8, per_class=per_class,
                             sizes=((500, 375), (375, 500), (500, 333), (480, 360)), quality=90)
    return tmp, root, f"generated: {8 * per_class} JPEGs ~500x375 q90"


# ----------------------------------------------------------------------------- ffcv

def _ffcv_redecode_rate(beton: Path, recipe, batch: int, workers: int, images: int, device: torch.device) -> float:
    """FFCV-SSL's design: one pipeline per view on the same image field, each decoding the JPEG again with FFCV's
    RandomResizedCrop decoder, then the flip and the same torch colour pipeline as ours (``finish_view``)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline import PipelineSpec
    from ffcv.transforms import ToTensor

    from loaders.sharding import step_generator
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
    from loaders.torch_folder import rrc_params, sample_generator
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
    from sdmp_fast.views import dino_recipe, mocov3_recipe
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
    if tmp is not None:
        tmp.cleanup()
    return {"convert": [conv], "loader": rows, "crop_distribution": dist}


# ----------------------------------------------------------------------------- augment

def bench_augment(device: torch.device, batch: int, size: int, local_size: int, iters: int) -> list[dict]:
    """Batched sdmp_fast.augment vs the reference loader's per-sample torchvision ops, on decoded images."""
    from loaders.torch_folder import apply_view, sample_generator
    from sdmp_fast.augment import apply_views, sample_view_params
    from sdmp_fast.views import dino_recipe, mocov3_recipe
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

def bench_step(device: torch.device, method: str, backbone: str, size: int, batch: int, iters: int,
               overrides: dict | None = None) -> list[dict]:
    """Median step time of ``method`` without and with SDMP (same views), and their ratio."""
    import loaders  # noqa: F401
    from sdmp_fast.config import load_config, resolve
    from sdmp_fast.engine.trainer import Trainer
    from sdmp_fast.methods import build_method
    from sdmp_fast.methods.base import method_recipe
    from sdmp_fast.models import build_backbone
    from sdmp_fast.registry import LOADERS
    rows = []
    for sdmp in (False, True):
        cfg = load_config(overrides={"method.name": method, "model.backbone": backbone, "data.image_size": size,
                                     "data.batch_size": batch, "sdmp.enabled": sdmp, "run.max_steps": 10_000,
                                     **(overrides or {})})
        torch.manual_seed(0)
        model = build_method(cfg, build_backbone(cfg)).to(device).to(memory_format=torch.channels_last)
        recipe = method_recipe(cfg)
        ld = LOADERS.build("synthetic", cfg, recipe, rank=0, world=1, device=device)
        res = resolve(cfg, ld.num_samples)
        trainer = Trainer(cfg, res, model, ld, device, Path(tempfile.gettempdir()))
        views = next(iter(ld)).views
        trainer.step = res.warmup_steps + 1  # past the warm-up: lr > 0

        def one():
            trainer.step = res.warmup_steps + 1
            trainer.train_step(views)
        t = time_fn(one, device, warmup=2, iters=iters)["median_s"]
        rows.append({"method": method + ("+sdmp" if sdmp else ""), "backbone": backbone, "views": list(recipe.sizes),
                     "batch": batch, "precision": str(trainer.dtype).replace("torch.", ""), "step_ms": round(1e3 * t, 1),
                     "images_per_s": round(batch / t, 1)})
    rows.append({"method": method, "ratio_sdmp_over_plain": round(rows[1]["step_ms"] / rows[0]["step_ms"], 3)})
    return rows


# DINO arms: the Fashion-MNIST CPU configuration (2 x 32 px + 4 x 16 px, small head) and DINO's ImageNet shape.
DINO_CPU = {"data.local_crops": 4, "data.local_size": 16, "method.dino_out_dim": 4096, "method.dino_hidden_dim": 512,
            "method.dino_bottleneck_dim": 128, "optim.clip_grad": 3.0, "optim.clip_mode": "per_param",
            "optim.weight_decay_end": 0.4}
DINO_QUICK = dict(DINO_CPU, **{"data.local_crops": 2, "method.dino_out_dim": 256, "method.dino_hidden_dim": 64,
                               "method.dino_bottleneck_dim": 32})
DINO_GPU = dict(DINO_CPU, **{"data.local_crops": 8, "data.local_size": 96, "method.dino_out_dim": 65536,
                             "method.dino_hidden_dim": 2048, "method.dino_bottleneck_dim": 256})


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=None, help="ImageNet-style folder for the loader benchmark (default: generated)")
    p.add_argument("--images", type=int, default=320, help="generated JPEGs for the loader benchmark")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--json", default=None, help="write results here (default: benchmarks/results/throughput-<device>.json)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    gpu = device.type == "cuda"
    out = {"env": env_record(device), "results": {}}
    print(json.dumps(out["env"]))
    if "loaders" in only:
        size, batch = (64, 16) if args.quick else (224, 32)
        out["results"]["loaders"] = bench_loaders(device, args.data, 64 if args.quick else args.images, batch,
                                                  args.workers, size, local_size=size * 96 // 224)
        rate = {(r["loader"], r["recipe"]): r["images_per_s"] for r in out["results"]["loaders"]}
        for (name, recipe), v in rate.items():
            if name in ("dali", "nvjpeg", "ffcv") and rate.get(("torch", recipe)):
                print(f"  {name} / torch, {recipe}: {v / rate[('torch', recipe)]:.2f}x", file=sys.stderr)
    if "ffcv" in only:
        size, batch = (64, 16) if args.quick else (224, 32)
        for key, rows in bench_ffcv(device, args.data, 64 if args.quick else args.images, batch, args.workers, size,
                                    local_size=size * 96 // 224).items():
            out["results"][f"ffcv_{key}"] = rows
    if "augment" in only:
        batch, size = (8, 64) if args.quick else ((256 if gpu else 32), 224)
        out["results"]["augment"] = bench_augment(device, batch, size, size * 96 // 224, iters=2 if args.quick else 5)
    if "mixing" in only:
        batch, size = (16, 64) if args.quick else (256, 224)
        out["results"]["mixing"] = bench_mixing(device, batch, size, iters=3 if args.quick else (20 if gpu else 5))
    if "step" in only:
        out["results"]["step"] = []
        if args.quick:
            out["results"]["step"] += bench_step(device, "mocov3", "vit_tiny_p4", 32, 16, 3, {"method.hidden_dim": 256})
            out["results"]["step"] += bench_step(device, "dino", "vit_tiny_p4_dino", 32, 16, 3, DINO_QUICK)
        else:
            out["results"]["step"] += bench_step(device, "mocov3", "vit_tiny_p4", 32, 64, 5, {"method.hidden_dim": 1024})
            out["results"]["step"] += bench_step(device, "dino", "vit_tiny_p4_dino", 32, 64, 5, DINO_CPU)
            if gpu:
                out["results"]["step"] += bench_step(device, "mocov3", "vit_small", 224, 128, 10, {"method.hidden_dim": 4096})
                out["results"]["step"] += bench_step(device, "dino", "vit_small_dino", 224, 64, 10, DINO_GPU)
    for section, rows in out["results"].items():
        print(f"== {section}")
        for r in rows:
            print("  " + json.dumps(r))
    path = Path(args.json) if args.json else Path(__file__).parent / "results" / f"throughput-{device.type}.json"
    write_json(path, out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
