"""The ``nvjpeg`` loader: JPEG bytes decoded a batch at a time by ``torchvision.io.decode_jpeg`` on the GPU
(nvJPEG), then every view made by the batched augmentation of ``sdmp_fast.augment``. No DALI needed.

Per step: read this rank's files (``loaders.sharding``, the same samples as the other loaders), decode
the whole batch in one ``decode_jpeg(list, device=...)`` call (on the CPU when there is no GPU: the same
code path), pack the images into a uint8 canvas ``[B, 3, Hmax, Wmax]`` with their true sizes, and run
``augment.sample_view_params`` + ``augment.apply_views`` on the device. A background thread prepares
up to ``data.prefetch`` batches ahead, on its own CUDA stream on a GPU (the training stream waits
for that batch's event only), so reading and decoding overlap with training.

Files that nvJPEG cannot take are found once, before training, by reading each file's header (the
index is cached beside the folder verification): non-JPEG data under a JPEG name (ImageNet has a PNG
named ``.JPEG``) and CMYK/YCCK JPEGs (ImageNet has 22) are decoded by PIL on the CPU and joined to the
batch. If a batch decode fails, the batch is decoded image by image so the error names the file.
torchvision >= 0.29 deprecates its decoders in favour of TorchCodec; that warning is filtered here,
explicitly and only around these calls.

Randomness: the augmentation generator of each step is seeded from (seed, rank, epoch, step): the
per-rank stream, and a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from sdmp_fast.augment import apply_views, sample_view_params
from sdmp_fast.batch import Batch
from sdmp_fast.datasets import DataError, Split
from sdmp_fast.views import Recipe

from .sharding import rank_batches, steps_per_epoch

_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


@contextlib.contextmanager
def _quiet_decoder():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
        yield


def jpeg_components(head: bytes) -> int:
    """Colour components of a baseline/progressive JPEG from its first bytes; 0 if not a (parsable) JPEG."""
    if head[:2] != b"\xff\xd8":
        return 0
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return 0
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return head[i + 9] if i + 9 < len(head) else 0
        i += 2 + length
    return 0


def cpu_path_files(split: Split, cache_dir: str | Path | None = None, head_bytes: int = 65536) -> set[int]:
    """Sample ids nvJPEG cannot decode (not JPEG, or not 1/3-component); cached by the split's file list."""
    key = hashlib.sha1("\n".join(p for p, _ in split.samples).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"nvjpeg_index_{key}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        return set(json.loads(cache.read_text()))
    out = []
    for i, (path, _) in enumerate(split.samples):
        with open(path, "rb") as f:
            if jpeg_components(f.read(head_bytes)) not in (1, 3):
                out.append(i)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(cache)
    return set(out)


def _pil_decode(path: str) -> torch.Tensor:
    from .torch_folder import decode_rgb
    return decode_rgb(path)


def decode_batch(paths: list[str], cpu_ids: set[int], ids: list[int], device: torch.device) -> list[torch.Tensor]:
    """uint8 [3, h, w] images on ``device``: one batched decode_jpeg call, PIL for the CPU-path files."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    with _quiet_decoder():
        gpu_pos = [k for k, i in enumerate(ids) if i not in cpu_ids]
        out: list[torch.Tensor | None] = [None] * len(ids)
        if gpu_pos:
            data = [read_file(paths[k]) for k in gpu_pos]
            try:
                imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                imgs = []
                for k, d in zip(gpu_pos, data):  # find the file that fails, and name it
                    try:
                        imgs.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                    except RuntimeError as e:
                        raise DataError(f"{paths[k]}: cannot decode JPEG ({e}); fix or remove it") from e
            for k, img in zip(gpu_pos, imgs):
                out[k] = img
        for k, i in enumerate(ids):
            if i in cpu_ids:
                out[k] = _pil_decode(paths[k]).to(device)
    return out  # type: ignore[return-value]


def pack(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left-aligned uint8 canvas [B, 3, Hmax, Wmax] and the true sizes [B, 2] (h, w)."""
    hs = [int(x.shape[1]) for x in images]
    ws = [int(x.shape[2]) for x in images]
    canvas = images[0].new_zeros(len(images), 3, max(hs), max(ws))
    for b, x in enumerate(images):
        canvas[b, :, :hs[b], :ws[b]] = x
    sizes = torch.tensor(list(zip(hs, ws)), dtype=torch.int64, device=canvas.device)
    return canvas, sizes


def step_generator(seed: int, rank: int, epoch: int, step: int, device: torch.device) -> torch.Generator:
    state = np.random.SeedSequence([seed, rank, epoch, step, 0x4A9]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class NvjpegLoader:
    """Batched GPU (or CPU) JPEG decoding + batched augmentation; yields :class:`Batch` on ``device``."""

    def __init__(self, split: Split, recipe: Recipe, global_batch: int, rank: int, world: int,
                 device: torch.device, seed: int = 0, prefetch: int = 2, cache_dir: str | Path | None = None):
        self.split, self.recipe, self.device = split, recipe, torch.device(device)
        self.global_batch, self.batch_size = global_batch, global_batch // world
        self.rank, self.world, self.seed, self.prefetch = rank, world, seed, max(1, prefetch)
        self.num_samples, self.num_classes = len(split), len(split.classes)
        if steps_per_epoch(len(split), global_batch) < 1:
            raise DataError(f"{split.root}: {len(split)} images are fewer than one global batch ({global_batch}); "
                            "lower data.batch_size")
        self.paths = [p for p, _ in split.samples]
        self.labels = torch.as_tensor(split.labels)
        self.cpu_ids = cpu_path_files(split, cache_dir)
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return steps_per_epoch(self.num_samples, self.global_batch)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = epoch, start_step

    def make_batch(self, step: int, ids: list[int]) -> Batch:
        """The Batch of one step (decode, pack, augment on the device)."""
        images = decode_batch([self.paths[i] for i in ids], self.cpu_ids, ids, self.device)
        canvas, sizes = pack(images)
        gen = step_generator(self.seed, self.rank, self.epoch, step, self.device)
        params = sample_view_params(self.recipe, sizes, gen)
        views = apply_views(canvas, sizes, params, self.recipe)
        index = torch.tensor(ids, dtype=torch.int64)
        return Batch(views=views, index=index.to(self.device), label=self.labels[index].to(self.device))

    def __iter__(self) -> Iterator[Batch]:
        steps = rank_batches(self.num_samples, self.global_batch, self.rank, self.world, self.seed, self.epoch,
                             self.start)
        cuda = self.device.type == "cuda"
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            stream = torch.cuda.Stream(self.device) if cuda else None
            try:
                for k, ids in enumerate(steps):
                    if stop.is_set():
                        return
                    with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                        batch = self.make_batch(self.start + k, ids)
                        event = torch.cuda.Event() if cuda else None
                        if cuda:
                            event.record(stream)
                    q.put((batch, event, stream))
            except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                q.put(e)
                return
            q.put(None)

        worker = threading.Thread(target=produce, name="nvjpeg-loader", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, event, stream = item
                if cuda:  # the training stream waits for this batch only; its memory now belongs to that stream
                    torch.cuda.current_stream(self.device).wait_event(event)
                    for t in batch.views + [batch.index, batch.label]:
                        t.record_stream(torch.cuda.current_stream(self.device))
                yield batch
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.05)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split: Split | None = None) -> NvjpegLoader:
    """Build the nvjpeg loader for ``split`` (default: the training split of ``data.path``)."""
    if split is None:
        from sdmp_fast.pretrain import load_splits
        split = load_splits(cfg)[0]
    from sdmp_fast.datasets import default_cache_dir
    return NvjpegLoader(split, recipe, cfg.data.batch_size, rank, world, torch.device(device), seed=cfg.run.seed,
                        prefetch=cfg.data.prefetch, cache_dir=default_cache_dir(cfg.data.cache_dir))
