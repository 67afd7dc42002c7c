"""``--profile-input N``: is this job waiting for its data? The configured job three ways in one process.

The comparison of Mohan et al. ("Analyzing and Mitigating Data Stalls in DNN Training", VLDB 2021): N steps on
synthetic views of the same shapes (the compute ceiling: the step alone), N batches of the configured loader
with no step (the input ceiling: the loader alone), and N steps of both (the real rate), each after a
warm-up (pipeline builds, worker start-up, first decodes) and timed between two device synchronisations.
The verdict compares the two ceilings: input-bound when the loader delivers clearly less than the step
could take (by how much), compute-bound in the other case, both near each other otherwise; a real rate
clearly under both ceilings means the loader and the step compete (for the CPU cores, or the device).

For an input-bound job the likely lever is named from what was measured here: decoding against augmentation
time per image (a sample of the source decoded with PIL and cut into the recipe's views, on the path its loader
takes: per sample on the CPU, or batched on the training device), the loader's threads against the cores, the
stored image size against the view size (``max_resolution`` of a ``.beton``), and whether decoding already runs
on a GPU.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch

from sdmp_fast import dist
from sdmp_fast.engine.telemetry import StallMeter, loader_workers
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.registry import LOADERS
from sdmp_fast.schema import ConfigError

TOLERANCE = 0.2  # ceilings within 20 % of each other are "near each other"
CONTENTION = 0.8  # a real rate under 80 % of the slower ceiling: the two compete
SAMPLE_IMAGES = 16  # images decoded and augmented for the per-image costs
DEVICE_VIEWS = ("nvjpeg", "ffcv")  # loaders that make views by the batched augmentation on the training device
GPU_DECODERS = ("dali", "nvjpeg")  # loaders that decode with nvJPEG on a GPU


def steps_argument(text: str) -> int:
    """``--profile-input N``: a step count >= 1 (argparse reports anything else before any work)."""
    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of steps per arm must be an integer >= 1")
    return steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def endless(loader) -> Iterator:
    """The loader's batches epoch after epoch (a profile may be longer than an epoch)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_arm(loader, step, warmup: int, steps: int, device: torch.device) -> dict:
    """images/s of ``steps`` batches of ``loader`` (each given to ``step`` unless it is None) after ``warmup``,
    and the share of that time the host waited for batches."""
    meter = StallMeter()
    batches = meter.batches(endless(loader))
    try:
        for i in range(warmup + steps):
            if i == warmup:
                sync(device)
                meter.wait, t0 = 0.0, time.perf_counter()
            batch = next(batches)
            if step is not None:
                step(batch.views)
        sync(device)
        seconds = time.perf_counter() - t0
    finally:
        batches.close()
    images = steps * loader.batch_size
    return {"images_per_s": images / seconds, "s_per_step": seconds / steps, "data_wait_frac": meter.wait / seconds}


# ----------------------------------------------------------------------------- per-image costs


def sample_images(cfg, split, count: int = SAMPLE_IMAGES) -> tuple[list[torch.Tensor], str]:
    """(uint8 [3, H, W] images decoded with PIL, what was decoded): a spread sample of the folder or the .beton."""
    from PIL import Image

    from sdmp_fast.data.images import decode_rgb
    if cfg.data.beton:
        import numpy as np

        from loaders.beton import JPG, Beton
        b = Beton(cfg.data.beton)
        try:
            picks = range(0, len(b), max(1, len(b) // count))[:count]
            out = []
            for i in picks:
                mode, h, w, data = b.image(i)
                arr = (np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB")) if mode == JPG
                       else data.reshape(h, w, 3))
                out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        finally:
            b.close()
        return out, f"{len(out)} images of {cfg.data.beton}"
    if split is None:
        return [], ""
    picks = list(range(0, len(split), max(1, len(split) // count)))[:count]
    return [decode_rgb(split.samples[i][0]) for i in picks], f"{len(picks)} images of {split.root}"


def augment_cost(images: list[torch.Tensor], recipe, device: torch.device, batched: bool) -> float:
    """Seconds per image to cut the recipe's views from ``images``: batched on ``device``, or per sample (the
    reference views, as the torch loader's workers do)."""
    if batched:
        from sdmp_fast.augment import apply_views, sample_view_params
        sizes = torch.tensor([im.shape[1:] for im in images], dtype=torch.int64)
        canvas = torch.zeros(len(images), 3, int(sizes[:, 0].max()), int(sizes[:, 1].max()), dtype=torch.uint8)
        for k, im in enumerate(images):
            canvas[k, :, :im.shape[1], :im.shape[2]] = im
        canvas, sizes = canvas.to(device), sizes.to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        apply_views(canvas, sizes, sample_view_params(recipe, sizes, gen), recipe)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        apply_views(canvas, sizes, sample_view_params(recipe, sizes, gen), recipe)
        sync(device)
        return (time.perf_counter() - t0) / len(images)
    from sdmp_fast.augment.reference import apply_view
    mean, std = torch.tensor(recipe.mean).view(3, 1, 1), torch.tensor(recipe.std).view(3, 1, 1)
    gen = torch.Generator().manual_seed(0)
    for spec in recipe.views:  # warm-up (first calls set up torchvision's kernels)
        apply_view(images[0], spec, gen, mean, std)
    t0 = time.perf_counter()
    for im in images:
        for spec in recipe.views:
            apply_view(im, spec, gen, mean, std)
    return (time.perf_counter() - t0) / len(images)


def input_costs(cfg, split, recipe, device: torch.device) -> dict:
    """Decode and augmentation milliseconds per image, stored and view sizes, threads and cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    d = cfg.data
    threads = {"dali": d.dali_threads or cores, "torch": d.num_workers, "ffcv": d.num_workers or cores}.get(d.loader)
    out = {"loader": d.loader, "device": device.type, "cores": cores, "threads": threads,
           "view_size": max(recipe.sizes), "source": d.beton and "beton" or d.format}
    sample_images(cfg, split, 1)  # warm-up (the decoder's first call, the first file read)
    t0 = time.perf_counter()
    images, what = sample_images(cfg, split)
    if not images:
        return out
    decode = (time.perf_counter() - t0) / len(images)
    batched = d.loader in DEVICE_VIEWS or (d.loader == "dali" and device.type == "cuda")
    out.update(sampled=what, decode_ms=1e3 * decode,
               augment_ms=1e3 * augment_cost(images, recipe, device if batched else torch.device("cpu"), batched),
               augment_path="batched on " + device.type if batched else "per sample on the CPU",
               stored_side=int(sorted(max(im.shape[1:]) for im in images)[len(images) // 2]))
    return out


def levers(c: dict) -> list[str]:
    """What to change first for an input-bound job, from the measured costs ``c`` (:func:`input_costs`)."""
    out = []
    loader, cuda = c["loader"], c["device"] == "cuda"
    threads = c.get("threads")
    if threads == 0:
        out.append("the torch loader decodes in the main (training) process: set data.num_workers (worker processes)")
    elif threads is not None and threads < c["cores"]:
        key = "data.dali_threads" if loader == "dali" else "data.num_workers"
        out.append(f"the loader has {threads} of this machine's {c['cores']} cores: raise {key}")
    if "decode_ms" not in c:
        return out or ["the source was not sampled (WebDataset shards): compare --loader choices with this profile"]
    decode, augment, side, view = c["decode_ms"], c["augment_ms"], c["stored_side"], c["view_size"]
    if decode >= augment:
        out.append(f"decoding dominates: {decode:.2f} ms per image against {augment:.2f} ms of augmentation")
        if side > 2 * view:
            fix = ("rewrite the .beton with a smaller --max-resolution" if c["source"] == "beton" else
                   "write a .beton with --max-resolution (python -m loaders.write_beton) or store smaller images")
            out.append(f"images are stored at about {side} px for {view} px views: {fix}, about "
                       f"{(side / (2 * view)) ** 2:.0f}x fewer pixels to decode at {2 * view} px")
        if not (cuda and loader in GPU_DECODERS):
            out.append("decode on a GPU with nvJPEG: --loader dali or --loader nvjpeg" +
                       ("" if cuda else " on a machine with one"))
    else:
        out.append(f"augmentation dominates: {augment:.2f} ms per image ({c['augment_path']}) against "
                   f"{decode:.2f} ms of decoding")
        if cuda and loader in DEVICE_VIEWS:
            out.append("data.augment_impl=triton: the batched augmentation in a few kernels")
        elif cuda:
            out.append("make the views on the GPU: --loader dali, nvjpeg or ffcv")
        else:
            out.append("the views are made on the CPU cores the step also uses: a GPU loader on a GPU machine, "
                       "or more cores")
    return out


# ----------------------------------------------------------------------------- verdict and report


def verdict(compute: float, input_rate: float, real: float) -> tuple[str, str]:
    """(kind, sentence) from the three images/s: compute-bound, input-bound or balanced."""
    if input_rate < compute / (1 + TOLERANCE):
        kind = "input-bound"
        text = (f"input-bound: the loader alone delivers {input_rate:.0f} images/s, {input_rate / compute:.0%} of the "
                f"{compute:.0f} the step could take ({compute / input_rate:.1f}x more)")
    elif compute < input_rate / (1 + TOLERANCE):
        kind = "compute-bound"
        text = (f"compute-bound: the step takes {compute:.0f} images/s, the loader alone delivers {input_rate:.0f} "
                f"({input_rate / compute:.1f}x more)")
    else:
        kind = "balanced"
        text = (f"both near each other: step {compute:.0f}, loader {input_rate:.0f} images/s (within "
                f"{TOLERANCE:.0%}); speeding up one alone gains little")
    if real < CONTENTION * min(compute, input_rate):
        text += (f"; together only {real:.0f} images/s, {real / min(compute, input_rate):.0%} of the slower ceiling: "
                 "the loader and the step compete for the same cores or device")
    return kind, text


ARMS = (("compute", "compute ceiling: synthetic views, step"), ("input", "input ceiling: loader alone, no step"),
        ("real", "real: loader + step"))


def format_report(r: dict) -> str:
    """The table and the verdict, as printed."""
    lines = [f"input profile of {r['job']}: {r['steps']} steps after {r['warmup']} warm-up, {r['device']}, "
             f"{r['date']}", "",
             f"| {'arm':<40} | images/s | s/step | host wait |", f"| {'-' * 40} | -------: | -----: | --------: |"]
    for key, label in ARMS:
        a = r["arms"][key]
        wait = f"{a['data_wait_frac']:.0%}" if key == "real" else "-"  # the other two: no step to wait between
        lines.append(f"| {label:<40} | {a['images_per_s']:8.1f} | {a['s_per_step']:6.3f} | {wait:>9} |")
    lines += ["", f"verdict: {r['verdict']}"]
    c = r["costs"]
    if "decode_ms" in c:
        lines.append(f"per image ({c['sampled']}): decode {c['decode_ms']:.2f} ms (PIL), views {c['augment_ms']:.2f} ms "
                     f"({c['augment_path']}); stored about {c['stored_side']} px, views {c['view_size']} px")
    lines += [f"lever: {x}" for x in r["levers"]]
    return "\n".join(lines)


def profile_input(cfg, res, method, loader, recipe, device: torch.device, out_dir: str | Path, steps: int,
                  split=None) -> dict:
    """Run the three arms of the configured job (``method`` and ``loader`` as pretraining builds them) for ``steps``
    steps each; write OUT/profile_input.json and return the record (its ``table`` is what is printed)."""
    if steps < 1:
        raise ConfigError(f"--profile-input {steps}: the number of steps per arm must be >= 1")
    warmup = max(3, steps // 4) + (4 if cfg.run.cuda_graph else 0)  # a CUDA graph is captured after 3 eager steps
    res = replace(res, total_steps=max(res.total_steps, warmup + steps))

    def step():  # a trainer per arm: a CUDA graph is captured on that arm's views (their dtype may differ)
        return Trainer(cfg, res, method, loader, device, out_dir).train_step

    synthetic = LOADERS.build("synthetic", cfg, recipe, rank=res.rank, world=res.world, device=device)
    method.train()
    arms = {"compute": time_arm(synthetic, step(), warmup, steps, device),
            "input": time_arm(loader, None, warmup, steps, device),
            "real": time_arm(loader, step(), warmup, steps, device)}
    kind, text = verdict(*(arms[k]["images_per_s"] for k in ("compute", "input", "real")))
    costs = input_costs(cfg, split, recipe, device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"cpu ({platform.processor() or platform.machine()}, {costs['cores']} cores)")
    record = {"job": f"{cfg.method.name}{' + SDMP' if cfg.sdmp.enabled else ''}, {cfg.model.backbone}, batch "
                     f"{cfg.data.batch_size}, {loader_workers(cfg)}",
              "steps": steps, "warmup": warmup, "world": res.world, "device": where,
              "date": time.strftime("%Y-%m-%d %H:%M"), "arms": arms, "bound": kind, "verdict": text, "costs": costs,
              "levers": levers(costs) if kind == "input-bound" else []}
    record["table"] = format_report(record)
    path = Path(out_dir) / "profile_input.json"
    if dist.is_main():  # written whole or not at all
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        print(record["table"])
        print(f"[run] wrote {path}", file=sys.stderr)
    record["json"] = str(path)
    return record
