"""The ``dali`` loader: every view of a sample cut from one decode, all augmentation inside one DALI pipeline.

The only module that imports ``nvidia.dali``. One graph builder serves every recipe (MoCo v3's two
views, DINO's multi-crop, the evaluation view) and both devices: on a GPU the JPEGs are decoded by
nvJPEG (``fn.decoders.image(device="mixed")``, the hardware decoder taking ``data.dali_hw_decoder_load``
of the work where the GPU has one) and every operator after the decoder runs on the GPU; without a
GPU the same graph runs on the CPU with ``device_id=None``. The device is chosen once, from the run's
training device (``build``), and is a parameter of the graph builder, so the CPU tests exercise the
graph that runs on the GPU.

Data order and sharding follow ``sdmp_fast.data.sharding`` exactly as the ``torch`` loader does: each epoch
this rank reads the file list of its slices of the global batches, in order (``fn.readers.file`` with
``files=``, no reader-side shuffle); the sample index rides along as the reader's label and the class
is looked up from an index -> label table. So both loaders see the same samples at every step, every
rank runs floor(samples / global batch) full steps, and a resumed run starts from (epoch, step). The
pipeline is rebuilt per epoch (and on resume) with a seed drawn from (seed, rank, epoch, start step):
the per-rank random stream of the augmentations (a run resumed mid-epoch sees the same samples as an
uninterrupted one, with other augmentation draws).

Per view (``views.ViewSpec``), the ``torch`` reference loader's recipe and parameters, with these
differences of DALI's operators (documented, not corrected):

* Random-resized crop: ``fn.random_resized_crop`` (area and log-uniform aspect sampling, 10 attempts,
  then DALI's fallback, which crops the whole image instead of torchvision's centre crop at the ratio
  bound); antialiased linear resize.
* Colour jitter with probability p: brightness and contrast in one ``fn.brightness_contrast`` about the
  image's mean grey level (torchvision's contrast; DALI's default centre would be 128), then saturation
  and hue in one ``fn.hsv``. The order is fixed (brightness, contrast, saturation, hue; torchvision
  draws a random order), and clipping to [0, 255] happens once per operator, not after each of the four
  adjustments. DALI's ``hsv`` is a linear transform in RGB (DALI's docs: the colour is projected on the
  grey axis, rotated about it by the hue delta and scaled): saturation is a blend with a grey image like
  torchvision's, but hue is that rotation, not torchvision's shift of the HSV hue (same parameter: the
  fraction of a turn, converted to degrees).
* Grayscale with probability p: saturation 0 in the same ``fn.hsv`` (measured within 1 level of the
  luma grey of ``fn.color_space_conversion``, torchvision's weights up to rounding).
* Gaussian blur with probability p: ``fn.gaussian_blur`` with sigma ~ U(lo, hi) and the window
  ``2*ceil(3*sigma)+1`` of the reference loader; a sample that is not blurred gets window 1 (the
  identity), so no sample pays for a blend.
* Solarize with probability p: arithmetic on uint8, ``x if x < 128 else 255 - x``, exact.
* Flip with probability p, then normalisation in ``fn.crop_mirror_normalize``, output HWC float32 (or
  float16 with ``data.dali_fp16`` on a GPU; DALI has no bfloat16 output, autocast casts), which is a
  channels-last ``[B, 3, H, W]`` tensor once permuted.

Outputs reach torch through the DALI PyTorch plugin (``DALIGenericIterator``), which copies each
output into a torch tensor on the pipeline's device (on a GPU: a device-to-device copy on the current
stream, overlapped with DALI's prefetching of the next batches).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import nvidia.dali.math as dmath  # noqa: E402
import torch
from nvidia.dali import fn, pipeline_def, types  # noqa: E402  (the registry turns ImportError into an install hint)
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy  # noqa: E402

from sdmp_fast.augment.recipes import Recipe, ViewSpec
from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.data.images import EvalSpec
from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.data.splits import refuse_class_subset, training_split
from sdmp_fast.streams import pipeline_seed


def default_threads() -> int:
    """DALI worker threads when ``data.dali_threads`` is 0: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------- graph building blocks

def _factor(on, spread: float):
    """Per-sample factor U(1 - spread, 1 + spread) where ``on`` is 1, exactly 1 where it is 0."""
    lo = max(0.0, 1.0 - spread)
    return 1.0 + on * (fn.random.uniform(range=[lo, 1.0 + spread]) - 1.0)


def _coin(p: float):
    return fn.cast(fn.random.coin_flip(probability=p), dtype=types.FLOAT)


def augment_view(img, spec: ViewSpec, mean: Sequence[float], std: Sequence[float], fp16: bool = False):
    """DALI graph of one training view of decoded uint8 HWC images (see the module docstring)."""
    x = fn.random_resized_crop(img, size=[spec.size, spec.size], random_area=list(spec.scale),
                               random_aspect_ratio=list(spec.ratio), num_attempts=10, antialias=True)
    brightness, contrast, saturation, hue = spec.jitter
    jitter = _coin(spec.jitter_p) if spec.jitter_p > 0 else None
    sat = 1.0
    if jitter is not None and (brightness > 0 or contrast > 0):
        grey = fn.color_space_conversion(x, image_type=types.RGB, output_type=types.GRAY)
        centre = fn.reductions.mean(fn.cast(grey, dtype=types.FLOAT))
        x = fn.brightness_contrast(x, brightness=_factor(jitter, brightness), contrast=_factor(jitter, contrast),
                                   contrast_center=centre)
    if jitter is not None and saturation > 0:
        sat = _factor(jitter, saturation)
    if spec.gray_p > 0:
        sat = sat * (1.0 - _coin(spec.gray_p))
    hue_deg = 0.0
    if jitter is not None and hue > 0:
        hue_deg = jitter * fn.random.uniform(range=[-hue * 360.0, hue * 360.0])
    if jitter is not None or spec.gray_p > 0:
        x = fn.hsv(x, hue=hue_deg, saturation=sat)
    if spec.blur_p > 0:
        sigma = fn.random.uniform(range=list(spec.blur_sigma))
        window = fn.cast(dmath.ceil(sigma * 3.0), dtype=types.INT32) * 2 + 1
        if spec.blur_p < 1:
            blur = fn.random.coin_flip(probability=spec.blur_p)       # int32 0/1
            window = window * blur + (1 - blur)                       # window 1: the identity
        x = fn.gaussian_blur(x, sigma=sigma, window_size=window)
    if spec.solarize_p > 0:
        u8 = types.UINT8
        above = fn.cast(x >= types.Constant(spec.solarize_threshold, dtype=u8), dtype=u8)
        flip = above * fn.cast(fn.random.coin_flip(probability=spec.solarize_p), dtype=u8)
        x = (types.Constant(1, dtype=u8) - flip) * x + flip * (types.Constant(255, dtype=u8) - x)
    return fn.crop_mirror_normalize(
        x, mirror=fn.random.coin_flip(probability=spec.flip_p), output_layout="HWC",
        dtype=types.FLOAT16 if fp16 else types.FLOAT,
        mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])


def eval_view(img, spec: EvalSpec, mean: Sequence[float], std: Sequence[float]):
    """DALI graph of the evaluation view: resize (short side ``resize``, or the whole image below 64 px), centre crop."""
    if spec.resize == spec.size:
        x = fn.resize(img, size=[spec.size, spec.size], antialias=True)
    else:
        x = fn.resize(img, resize_shorter=spec.resize, antialias=True)
    return fn.crop_mirror_normalize(x, crop=[spec.size, spec.size], crop_pos_x=0.5, crop_pos_y=0.5,
                                    output_layout="HWC", dtype=types.FLOAT,
                                    mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])


def _decode(jpegs, gpu: bool, hw_decoder_load: float):
    if gpu:
        return fn.decoders.image(jpegs, device="mixed", output_type=types.RGB, hw_decoder_load=hw_decoder_load)
    return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)


@pipeline_def(enable_conditionals=False)
def train_graph(files: list, ids: list, specs: tuple, mean: tuple, std: tuple, gpu: bool, fp16: bool,
                hw_decoder_load: float):
    """Read ``files`` in order (label = sample id), decode once, one output per view, then the ids."""
    jpegs, index = fn.readers.file(files=files, labels=ids, random_shuffle=False, name="Reader")
    img = _decode(jpegs, gpu, hw_decoder_load)
    return tuple(augment_view(img, s, mean, std, fp16) for s in specs) + (index,)


@pipeline_def(enable_conditionals=False)
def shard_graph(tars: list, indices: list, shard_id: int, num_shards: int, initial_fill: int, specs: tuple,
                mean: tuple, std: tuple, gpu: bool, fp16: bool, hw_decoder_load: float):
    """WebDataset shards (``loaders/shards.py``): this rank's contiguous 1/world, buffer-shuffled; views, ids, labels."""
    encoded, label, index = fn.readers.webdataset(
        paths=tars, index_paths=indices, ext=["img", "cls", "idx"], dtypes=[types.UINT8, types.INT32, types.INT32],
        shard_id=shard_id, num_shards=num_shards, random_shuffle=True, initial_fill=initial_fill,
        pad_last_batch=True, missing_component_behavior="error", name="Reader")
    img = _decode(encoded, gpu, hw_decoder_load)
    return tuple(augment_view(img, s, mean, std, fp16) for s in specs) + (index, label)


@pipeline_def(enable_conditionals=False)
def eval_graph(files: list, ids: list, spec: EvalSpec, mean: tuple, std: tuple, gpu: bool, hw_decoder_load: float):
    jpegs, index = fn.readers.file(files=files, labels=ids, random_shuffle=False, pad_last_batch=True, name="Reader")
    return eval_view(_decode(jpegs, gpu, hw_decoder_load), spec, mean, std), index


# ----------------------------------------------------------------------------- loader

def _device_id(device: torch.device) -> int | None:
    if device.type == "cuda":
        return device.index if device.index is not None else torch.cuda.current_device()
    return None


def _as_batch_views(out: dict, names: list[str], device: torch.device) -> list[torch.Tensor]:
    # [B, H, W, 3] contiguous -> [B, 3, H, W] in channels-last memory format, without a copy
    return [out[n].to(device, non_blocking=True).permute(0, 3, 1, 2) for n in names]


class DaliLoader:
    """Training loader over a scanned :class:`Split`, or WebDataset shards (``manifest``: ``shards.read_manifest``).

    Shards are read the way DALI reads tar files: rank r takes the r-th contiguous 1/world of the samples
    (``shard_id``/``num_shards``) every epoch and shuffles them through a buffer of ``shuffle_buffer``
    samples seeded per (seed, rank, epoch), not by the global permutation of the folder path; every rank
    still runs floor(samples / global batch) steps. Resuming mid-epoch re-reads and drops the batches
    before the start step (the same samples and draws as an uninterrupted run).
    """

    def __init__(self, split: Split | None, recipe: Recipe, global_batch: int, rank: int, world: int,
                 device: torch.device, seed: int = 0, threads: int = 0, prefetch: int = 2,
                 hw_decoder_load: float = 0.65, fp16: bool = False, manifest: dict | None = None,
                 shuffle_buffer: int = 4096):
        if (split is None) == (manifest is None):
            raise ValueError("DaliLoader reads either a folder split or a shard manifest")
        self.split, self.manifest, self.recipe, self.device = split, manifest, recipe, torch.device(device)
        self.global_batch, self.batch_size = global_batch, global_batch // world
        self.rank, self.world, self.seed = rank, world, seed
        self.shuffle_buffer = shuffle_buffer
        if split is not None:
            self.num_samples, self.num_classes, where = len(split), len(split.classes), split.root
        else:
            self.num_samples, self.num_classes = manifest["num_samples"], len(manifest["classes"])
            where = Path(manifest["tars"][0]).parent
        if steps_per_epoch(self.num_samples, global_batch) < 1:
            raise DataError(f"{where}: {self.num_samples} images are fewer than one global batch ({global_batch}); "
                            "lower data.batch_size")
        if fp16 and self.device.type != "cuda":
            raise DataError("data.dali_fp16 needs a CUDA training device (the CPU step runs in float32)")
        self.threads, self.prefetch = threads or default_threads(), prefetch
        self.hw_decoder_load, self.fp16 = hw_decoder_load, fp16
        if split is not None:
            self.files = [p for p, _ in split.samples]
            self.labels = torch.as_tensor(split.labels)
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return steps_per_epoch(self.num_samples, self.global_batch)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = epoch, start_step

    def sample_ids(self) -> list[int]:
        """This rank's sample ids of the current epoch from its start step, in reading order."""
        return [i for b in rank_batches(self.num_samples, self.global_batch, self.rank, self.world, self.seed,
                                        self.epoch, self.start) for i in b]

    def _pipeline(self, ids: list[int] | None):
        gpu = self.device.type == "cuda"
        common = dict(specs=self.recipe.views, mean=self.recipe.mean, std=self.recipe.std, gpu=gpu, fp16=self.fp16,
                      hw_decoder_load=self.hw_decoder_load, batch_size=self.batch_size, num_threads=self.threads,
                      device_id=_device_id(self.device), prefetch_queue_depth=self.prefetch)
        if ids is None:
            per_rank = self.num_samples // self.world
            return shard_graph(tars=self.manifest["tars"], indices=self.manifest["indices"], shard_id=self.rank,
                               num_shards=self.world, initial_fill=max(1, min(self.shuffle_buffer, per_rank)),
                               seed=pipeline_seed(self.seed, self.rank, self.epoch, 0), **common)
        return train_graph(files=[self.files[i] for i in ids], ids=ids, specs=self.recipe.views,
                           mean=self.recipe.mean, std=self.recipe.std, gpu=gpu, fp16=self.fp16,
                           hw_decoder_load=self.hw_decoder_load, batch_size=self.batch_size,
                           num_threads=self.threads, device_id=_device_id(self.device),
                           seed=pipeline_seed(self.seed, self.rank, self.epoch, self.start),
                           prefetch_queue_depth=self.prefetch)

    def __iter__(self) -> Iterator[Batch]:
        steps = len(self) - self.start
        if steps <= 0:
            return
        ids = self.sample_ids() if self.split is not None else None
        names = [f"view{v}" for v in range(len(self.recipe.views))]
        extra = ["index"] if ids is not None else ["index", "label"]
        it = DALIGenericIterator(self._pipeline(ids), output_map=names + extra, reader_name="Reader",
                                 last_batch_policy=LastBatchPolicy.DROP, auto_reset=False)
        skip = self.start if ids is None else 0   # shards: replay the epoch's first batches on resume
        try:
            for n, out in enumerate(it):
                if n < skip:
                    continue
                if n - skip >= steps:
                    break
                out = out[0]
                index = out["index"].view(-1).long().cpu()
                label = self.labels[index] if ids is not None else out["label"].view(-1).long().cpu()
                yield Batch(views=_as_batch_views(out, names, self.device), index=index.to(self.device),
                            label=label.to(self.device))
        finally:
            del it


def eval_batches(split: Split, indices: Sequence[int], spec: EvalSpec, mean, std, batch_size: int,
                 device: torch.device | str = "cpu", threads: int = 0,
                 hw_decoder_load: float = 0.65) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic (images, labels) batches of ``split[indices]`` in order (the last one may be short)."""
    device = torch.device(device)
    indices = list(indices)
    if not indices:
        return
    pipe = eval_graph(files=[split.samples[i][0] for i in indices], ids=indices, spec=spec, mean=tuple(mean),
                      std=tuple(std), gpu=device.type == "cuda", hw_decoder_load=hw_decoder_load,
                      batch_size=batch_size, num_threads=threads or default_threads(),
                      device_id=_device_id(device), seed=0)
    labels = torch.as_tensor(split.labels)
    it = DALIGenericIterator(pipe, output_map=["image", "index"], reader_name="Reader",
                             last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False)
    for out in it:
        out = out[0]
        index = out["index"].view(-1).long().cpu()
        yield out["image"].to(device).permute(0, 3, 1, 2), labels[index].to(device)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split: Split | None = None) -> DaliLoader:
    """Build the DALI loader for ``split`` (default: the training split of ``data.path``)."""
    d = cfg.data
    manifest = None
    if d.format == "webdataset":
        from loaders.shards import read_manifest
        if not d.path:
            raise DataError("data.format = 'webdataset' needs data.path: the output folder of `python -m loaders.shards`")
        refuse_class_subset(d, "WebDataset shards")
        manifest, split = read_manifest(Path(d.path) / "train"), None
    else:
        split = training_split(d, split)  # the scan, class subset and verification of every command
    return DaliLoader(split, recipe, d.batch_size, rank, world, torch.device(device), seed=cfg.run.seed,
                      threads=d.dali_threads, prefetch=d.prefetch, hw_decoder_load=d.dali_hw_decoder_load,
                      fp16=d.dali_fp16, manifest=manifest)
