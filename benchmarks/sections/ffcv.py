"""``ffcv``: the .beton converter (images/s, file size), the ffcv loader's decode-once design against
FFCV-SSL-style re-decoding per view (one FFCV pipeline per view on the same image field, the same torch colour
pipeline after it), the decode / augment split, and the crop area / aspect distribution of the ffcv loader
(boxes on the stored, --max-resolution image) against the torch loader's (on the original)."""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import package as pkg
from benchmarks.sections.common import LATE, Context, drain, folder_sizes, image_source, past, recipes


def redecode_batches(beton: Path, recipe, batch: int, workers: int, device: torch.device):
    """FFCV-SSL's design, one batch of views per item: one pipeline per view on the same image field, each
    decoding the JPEG again with FFCV's RandomResizedCrop decoder, then the flip and our colour pipeline."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline import PipelineSpec
    from ffcv.transforms import ToTensor
    pipes = {f"view{k}": PipelineSpec("image", transforms=[ToTensor()],
                                      decoder=RandomResizedCropRGBImageDecoder((v.size, v.size), v.scale, v.ratio))
             for k, v in enumerate(recipe.views)}
    pipes.update(image=None, height=None, width=None, label=[IntDecoder(), ToTensor()],
                 index=[IntDecoder(), ToTensor()])
    ld = Loader(str(beton), batch_size=batch, num_workers=workers, order=OrderOption.RANDOM, seed=0, pipelines=pipes,
                drop_last=True, batches_ahead=2)
    names = list(ld.pipeline_specs)  # the order of FFCV's outputs
    for step, out in enumerate(ld):
        got = dict(zip(names, out))
        sizes = torch.tensor([[recipe.views[0].size] * 2] * batch, device=device)
        params = pkg.sample_view_params(recipe, sizes, pkg.step_generator(0, 0, 0, step, device))
        views = []
        for k, (p, spec) in enumerate(zip(params, recipe.views)):
            x = got[f"view{k}"].to(device).permute(0, 3, 1, 2).float().div_(255)
            x = torch.where(p.flip.view(-1, 1, 1, 1), x.flip(-1), x)
            views.append(pkg.finish_view(x, p, spec, recipe.mean, recipe.std))
        yield views


def crop_distribution(beton: Path, recipe, samples: int) -> list[dict]:
    """Crop area fraction and aspect ratio of the ffcv loader's boxes (drawn on the STORED image, longer side
    capped by --max-resolution) against the torch loader's (drawn on the original), per view spec."""
    stored, orig = pkg.beton_image_sizes(beton)
    ids = np.arange(samples) % len(stored)
    rows = []
    for spec in {v.scale: v for v in recipe.views}.values():
        ref = [pkg.reference_crop_box(int(orig[i, 0]), int(orig[i, 1]), spec.scale, spec.ratio,
                                      pkg.sample_generator(1, 0, k)) for k, i in enumerate(ids)]
        ref_area = np.array([h * w / (orig[i, 0] * orig[i, 1]) for (_, _, h, w), i in zip(ref, ids)])
        ref_aspect = np.array([w / h for (_, _, h, w) in ref])
        p = pkg.sample_view_params(type(recipe)("one", (spec,), recipe.mean, recipe.std), torch.from_numpy(stored[ids]),
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


def loader_rates(beton: Path, recipe, batch: int, workers: int, images: int, device: torch.device) -> dict:
    """images/s of the ffcv loader decoding only, decoding once + augmenting, and of FFCV-SSL-style re-decoding."""
    ld = pkg.ffcv_loader(beton, recipe, batch, device, workers)
    rates = {}
    for arm, pull in (("decode only", lambda: ld.decoded()), ("decode once + augment", lambda: iter(ld))):
        ld.set_epoch(0)
        n, secs = drain(pull(), device, images, count=lambda _: batch)
        rates[arm] = n / max(secs, 1e-9)
    n, secs = drain(redecode_batches(beton, recipe, batch, workers, device), device, images, count=lambda _: batch)
    rates["re-decode per view (FFCV-SSL style)"] = n / max(secs, 1e-9)
    return rates


def bench_ffcv(device: torch.device, data: str | None, images: int, batch: int, workers: int, size: int,
               local_size: int = 96, local_crops: int = 8) -> dict:
    """The converter (images/s, size), the ffcv loader (decode once) against FFCV-SSL-style re-decoding per
    view, the decode / augment split, and the crop distribution against the torch loader."""
    _, root, source = image_source(data, images)
    work = tempfile.TemporaryDirectory()
    beton = Path(work.name) / "train.beton"
    conv = pkg.write_beton(root, beton, workers=workers)
    conv.update(source=source, max_resolution=400, write_mode="jpg", jpeg_quality=90, workers=workers,
                source_bytes=sum(f.stat().st_size for f in root.rglob("*") if f.is_file()))
    print(f"  convert {conv['images']} images: {conv['images_per_s']} img/s, {conv['bytes'] / 2**20:.1f} MiB "
          f"(source {conv['source_bytes'] / 2**20:.1f} MiB)", file=sys.stderr)
    rows, recs = [], recipes(size, local_size, local_crops)
    for name, recipe in recs.items():
        rates = loader_rates(beton, recipe, batch, workers, images, device)
        ours, theirs = rates["decode once + augment"], rates["re-decode per view (FFCV-SSL style)"]
        rows.append({"recipe": name, "batch": batch, "workers": workers, "images": images,
                     **{f"{k} img/s": round(v, 1) for k, v in rates.items()},
                     "augment_ms_per_image": round(1e3 * (1 / ours - 1 / rates["decode only"]), 2),
                     "decode_ms_per_image": round(1e3 / rates["decode only"], 2),
                     "decode_once_vs_redecode": round(ours / theirs, 2)})
        print(f"  ffcv {name:24s} decode once {ours:7.1f} img/s, re-decode per view {theirs:7.1f} img/s "
              f"({ours / theirs:.2f}x); decode only {rates['decode only']:7.1f} img/s", file=sys.stderr)
    dist = crop_distribution(beton, recs["mocov3 two-view"], 4000)
    work.cleanup()
    return {"convert": [conv], "loader": rows, "crop_distribution": dist}


def run(ctx: Context) -> None:
    if importlib.util.find_spec("ffcv") is None:
        ctx.results["ffcv"] = [{"status": "skipped: ffcv is not installed (pip install -e .[ffcv])"}]
        return
    if past(ctx.deadline):
        ctx.results["ffcv"] = [{"status": LATE}]
        return
    size, batch, images, local_size = folder_sizes(ctx.args)
    for key, rows in bench_ffcv(ctx.device, ctx.args.data, images, batch, ctx.args.workers, size, local_size).items():
        ctx.results[f"ffcv_{key}"] = rows
