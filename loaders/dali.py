"""The ``dali`` loader: every view of a sample cut from one decode, all augmentation inside one DALI pipeline.

The only module that imports ``nvidia.dali``. One graph serves every recipe and both devices: on a GPU the JPEGs
are decoded by nvJPEG (``device="mixed"``, the hardware decoder taking ``data.dali_hw_decoder_load`` of the work
where the GPU has one) and every later operator runs on the GPU; without a GPU the same graph runs on the CPU
(``device_id=None``), so the CPU tests exercise the graph that runs on the GPU. The views follow the reference
recipe with the differences of DALI's operators noted in :func:`augment_view`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import nvidia.dali.math as dmath
import torch
from nvidia.dali import fn, pipeline_def, types  # the registry turns an ImportError into an install hint
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from loaders.base import ShardedLoader
from loaders.shards import read_manifest
from sdmp_fast.augment.recipes import Recipe, ViewSpec
from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.data.splits import refuse_class_subset, training_split
from sdmp_fast.streams import pipeline_seed

# ViewSpec.interpolation -> DALI's resize filter (antialias=True makes linear the widened triangle)
INTERP = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}


def default_threads() -> int:
    """DALI worker threads when ``data.dali_threads`` is 0: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _factor(on, spread: float):
    """Per-sample factor U(1 - spread, 1 + spread) where ``on`` is 1, exactly 1 where it is 0."""
    lo = max(0.0, 1.0 - spread)
    return 1.0 + on * (fn.random.uniform(range=[lo, 1.0 + spread]) - 1.0)


def _coin(p: float):
    return fn.cast(fn.random.coin_flip(probability=p), dtype=types.FLOAT)


def _brightness_contrast(x, brightness, contrast):
    """``brightness * (m + contrast * (x - m))`` about each image's mean grey m, rounded and saturated to uint8.

    Arithmetic on the image rather than ``fn.brightness_contrast``: its ``contrast_center`` is an argument, and
    arguments must be CPU nodes, while m is computed from the image, a GPU node on a GPU. Equal to brightness
    then contrast about the brightened image's mean (b m), with one clip at the end.
    """
    grey = fn.color_space_conversion(x, image_type=types.RGB, output_type=types.GRAY)
    centre = fn.reductions.mean(fn.cast(grey, dtype=types.FLOAT))  # per sample, broadcast over H, W, C
    return fn.cast(brightness * (centre + contrast * (fn.cast(x, dtype=types.FLOAT) - centre)), dtype=types.UINT8)


def augment_view(img, spec: ViewSpec, mean: Sequence[float], std: Sequence[float], fp16: bool = False):
    """DALI graph of one training view of decoded uint8 HWC images: a float32 HWC view (float16 with ``fp16``;
    DALI has no bfloat16 output, autocast casts), a channels-last ``[B, 3, H, W]`` tensor once permuted."""
    # DALI's fallback after 10 attempts crops the whole image (torchvision: a centre crop at the ratio bound).
    # The resize filter is the spec's: antialiased triangle, or DALI's cubic (a = -0.5 as PIL's, widened when
    # downscaling, but its first pass is not clipped to [0, 255] as PIL's is: see tests/loaders/test_dali.py)
    x = fn.random_resized_crop(img, size=[spec.size, spec.size], random_area=list(spec.scale),
                               random_aspect_ratio=list(spec.ratio), num_attempts=10, antialias=True,
                               interp_type=INTERP[spec.interpolation])
    # Colour jitter in a fixed order (torchvision draws a random one), clipped to [0, 255] once per step rather
    # than after each adjustment: brightness and contrast in one expression, about the image's mean grey
    # (torchvision's contrast centre), then saturation and hue in one fn.hsv.
    brightness, contrast, saturation, hue = spec.jitter
    jitter = _coin(spec.jitter_p) if spec.jitter_p > 0 else None
    sat = 1.0
    if jitter is not None and (brightness > 0 or contrast > 0):
        x = _brightness_contrast(x, _factor(jitter, brightness), _factor(jitter, contrast))
    if jitter is not None and saturation > 0:
        sat = _factor(jitter, saturation)
    if spec.gray_p > 0:  # saturation 0: within 1 level of the luma grey (torchvision's weights, up to rounding)
        sat = sat * (1.0 - _coin(spec.gray_p))
    # fn.hsv is linear in RGB: saturation blends with grey as torchvision does, but hue is a rotation about the
    # grey axis, not torchvision's shift of the HSV hue (same parameter: a fraction of a turn, here in degrees)
    hue_deg = 0.0
    if jitter is not None and hue > 0:
        hue_deg = jitter * fn.random.uniform(range=[-hue * 360.0, hue * 360.0])
    if jitter is not None or spec.gray_p > 0:
        x = fn.hsv(x, hue=hue_deg, saturation=sat)
    if spec.blur_p > 0:  # the reference's window 2*ceil(3 sigma)+1
        sigma = fn.random.uniform(range=list(spec.blur_sigma))
        window = fn.cast(dmath.ceil(sigma * 3.0), dtype=types.INT32) * 2 + 1
        if spec.blur_p < 1:
            blur = fn.random.coin_flip(probability=spec.blur_p)       # int32 0/1
            window = window * blur + (1 - blur)                       # window 1, the identity: no blend to pay for
        x = fn.gaussian_blur(x, sigma=sigma, window_size=window)
    if spec.solarize_p > 0:  # exact, on uint8
        u8 = types.UINT8
        above = fn.cast(x >= types.Constant(spec.solarize_threshold, dtype=u8), dtype=u8)
        flip = above * fn.cast(fn.random.coin_flip(probability=spec.solarize_p), dtype=u8)
        x = (types.Constant(1, dtype=u8) - flip) * x + flip * (types.Constant(255, dtype=u8) - x)
    return fn.crop_mirror_normalize(
        x, mirror=fn.random.coin_flip(probability=spec.flip_p), output_layout="HWC",
        dtype=types.FLOAT16 if fp16 else types.FLOAT,
        mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])


@pipeline_def(enable_conditionals=False)
def train_graph(read: dict, specs: tuple, mean: tuple, std: tuple, gpu: bool, fp16: bool, hw_decoder_load: float):
    """Read, decode once, one output per view, then the sample ids (and, from shards, the labels).

    ``read``: ``files`` and ``labels`` (the sample ids), read in that order; or WebDataset shards (``paths``,
    ``index_paths``, ``shard_id``, ``num_shards``, ``initial_fill``), buffer-shuffled.
    """
    if "files" in read:
        encoded, index = fn.readers.file(**read, random_shuffle=False, name="Reader")
        extra = (index,)
    else:
        encoded, label, index = fn.readers.webdataset(
            **read, ext=["img", "cls", "idx"], dtypes=[types.UINT8, types.INT32, types.INT32], random_shuffle=True,
            pad_last_batch=True, missing_component_behavior="error", name="Reader")
        extra = (index, label)
    if gpu:
        img = fn.decoders.image(encoded, device="mixed", output_type=types.RGB, hw_decoder_load=hw_decoder_load)
    else:
        img = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
    return tuple(augment_view(img, s, mean, std, fp16) for s in specs) + extra


def _operators(pipe) -> list:
    """Every operator instance of a defined pipeline, each once, after all of its inputs (argument inputs too).

    DALI has no public listing of a pipeline's operators before ``build()`` (which needs the device): the outputs
    that calling a ``pipeline_def`` function records (``Pipeline._graph_out``) are walked back through each
    DataNode's ``source`` operator and its inputs.
    """
    seen: dict[int, object] = {}

    def visit(op) -> None:
        if id(op) not in seen:
            for node in op.inputs:
                visit(node.source)
            seen[id(op)] = op
    for node in pipe._graph_out:
        visit(node.source)
    return list(seen.values())


def graph_ops(pipe) -> list[tuple[str, str, bool]]:
    """(operator, device, downstream of the decoder) of every operator of a defined pipeline, inputs first."""
    after: dict[int, bool] = {}
    out = []
    for op in _operators(pipe):
        name = op._op.schema_name
        after[id(op)] = name.startswith("decoders__") or any([after[id(node.source)] for node in op.inputs])
        out.append((name, op._op.device, after[id(op)]))
    return out


def crop_filters(pipe) -> list[str]:
    """The resize filter (a ``ViewSpec.interpolation`` name) of every random resized crop of a defined pipeline,
    in the order of the views."""
    names = {v: k for k, v in INTERP.items()}
    return [names[op._op._init_args.get("interp_type", types.INTERP_LINEAR)] for op in _operators(pipe)
            if op._op.schema_name == "RandomResizedCrop"]


def _device_id(device: torch.device) -> int | None:
    if device.type == "cuda":
        return device.index if device.index is not None else torch.cuda.current_device()
    return None


def _as_batch_views(out: dict, names: list[str], device: torch.device) -> list[torch.Tensor]:
    # [B, H, W, 3] contiguous -> [B, 3, H, W] in channels-last memory format, without a copy
    return [out[n].to(device, non_blocking=True).permute(0, 3, 1, 2) for n in names]


class DaliLoader(ShardedLoader):
    """Training loader over a scanned :class:`Split`, or WebDataset shards (``manifest``: ``shards.read_manifest``).

    A folder is read by the sharding rule: each epoch this rank's file list, in order (no reader-side shuffle),
    the sample id riding along as the reader's label. Shards are read the way DALI reads tar files: rank r takes
    the r-th contiguous 1/world of the samples every epoch and shuffles them through a buffer of
    ``shuffle_buffer`` samples, not by the global permutation; every rank still runs floor(samples / global
    batch) steps. The pipeline is rebuilt per epoch (and on resume) with a seed drawn from (seed, rank, epoch,
    start step); shards are re-read from the epoch's start on resume and the batches before the start step dropped.
    """

    def __init__(self, split: Split | None, recipe: Recipe, global_batch: int, rank: int, world: int,
                 device: torch.device, seed: int = 0, threads: int = 0, prefetch: int = 2,
                 hw_decoder_load: float = 0.65, fp16: bool = False, manifest: dict | None = None,
                 shuffle_buffer: int = 4096):
        if (split is None) == (manifest is None):
            raise ValueError("DaliLoader reads either a folder split or a shard manifest")
        if split is not None:
            num_samples, self.num_classes, source = len(split), len(split.classes), split.root
            self.files = [p for p, _ in split.samples]
            self.labels = torch.as_tensor(split.labels)
        else:
            num_samples, self.num_classes = manifest["num_samples"], len(manifest["classes"])
            source = Path(manifest["tars"][0]).parent
        super().__init__(num_samples, global_batch, rank, world, seed, source)
        self.split, self.manifest, self.recipe, self.device = split, manifest, recipe, torch.device(device)
        if fp16 and self.device.type != "cuda":
            raise DataError("data.dali_fp16 needs a CUDA training device (the CPU step runs in float32)")
        self.threads, self.prefetch, self.shuffle_buffer = threads or default_threads(), prefetch, shuffle_buffer
        self.hw_decoder_load, self.fp16 = hw_decoder_load, fp16

    def pipeline(self, ids: list[int] | None):
        """This epoch's pipeline, defined (not built): over the files of ``ids``, or (None) the shards."""
        if ids is None:
            m = self.manifest
            fill = max(1, min(self.shuffle_buffer, self.num_samples // self.world))
            read = dict(paths=m["tars"], index_paths=m["indices"], shard_id=self.rank, num_shards=self.world,
                        initial_fill=fill)
            seed = pipeline_seed(self.seed, self.rank, self.epoch, 0)
        else:
            read = dict(files=[self.files[i] for i in ids], labels=ids)
            seed = pipeline_seed(self.seed, self.rank, self.epoch, self.start)
        return train_graph(read=read, specs=self.recipe.views, mean=self.recipe.mean, std=self.recipe.std,
                           gpu=self.device.type == "cuda", fp16=self.fp16, hw_decoder_load=self.hw_decoder_load,
                           batch_size=self.batch_size, num_threads=self.threads, device_id=_device_id(self.device),
                           seed=seed, prefetch_queue_depth=self.prefetch)

    def __iter__(self) -> Iterator[Batch]:
        steps = len(self) - self.start
        if steps <= 0:
            return
        ids = [i for b in self.step_ids() for i in b] if self.split is not None else None
        names = [f"view{v}" for v in range(len(self.recipe.views))]
        extra = ["index"] if ids is not None else ["index", "label"]
        # the plugin copies each output into a torch tensor on the pipeline's device (on a GPU: on the current
        # stream, overlapped with DALI's prefetching of the next batches)
        it = DALIGenericIterator(self.pipeline(ids), output_map=names + extra, reader_name="Reader",
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


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split: Split | None = None) -> DaliLoader:
    """Build the DALI loader for ``split`` (default: the training split of ``data.path``)."""
    d = cfg.data
    manifest = None
    if d.format == "webdataset":
        if not d.path:
            raise DataError("data.format = 'webdataset' needs data.path: the output folder of "
                            "`python -m loaders.shards`")
        refuse_class_subset(d, "WebDataset shards")
        manifest, split = read_manifest(Path(d.path) / "train"), None
    else:
        split = training_split(d, split)  # the scan, class subset and verification of every command
    return DaliLoader(split, recipe, d.batch_size, rank, world, torch.device(device), seed=cfg.run.seed,
                      threads=d.dali_threads, prefetch=d.prefetch, hw_decoder_load=d.dali_hw_decoder_load,
                      fp16=d.dali_fp16, manifest=manifest)
