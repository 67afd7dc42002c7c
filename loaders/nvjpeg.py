"""The ``nvjpeg`` loader: JPEGs decoded a batch at a time by ``torchvision.io.decode_jpeg`` (nvJPEG on a GPU, the
same call on the CPU otherwise), then every view made by the batched augmentation on the device. No DALI needed.

The bytes come from the folder's files or, with ``data.beton=PATH``, from an FFCV ``.beton`` read by
:mod:`loaders.beton` (numpy + mmap, no ffcv import): FFCV's packed storage with GPU decoding.
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

import torch

from loaders.base import CanvasLoader
from loaders.beton import RAW, Beton
from sdmp_fast.augment.recipes import Recipe
from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import DataError, Split, default_cache_dir
from sdmp_fast.data.images import decode_rgb
from sdmp_fast.data.splits import refuse_class_subset, training_split

_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


@contextlib.contextmanager
def _quiet_decoder():
    """torchvision >= 0.29 deprecates its decoders in favour of TorchCodec: silence that warning, only around them."""
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
    """Sample ids nvJPEG cannot decode, found once from each file's header and cached by the split's file list.

    Non-JPEG data under a JPEG name (ImageNet has a PNG named ``.JPEG``) and CMYK/YCCK JPEGs (ImageNet has 22)
    are decoded by PIL on the CPU and joined to their batch.
    """
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


def decode_batch(items: list[torch.Tensor], names: list[str], device: torch.device) -> list[torch.Tensor]:
    """uint8 [3, h, w] images on ``device``.

    ``items[k]`` is either encoded JPEG bytes (1-D uint8: all of them are decoded by one batched
    ``decode_jpeg`` call) or an already decoded [3, h, w] image (CPU-path files, raw .beton images).
    ``names`` label the items in errors: when the batched call fails, the batch is decoded item by item so
    that the error names the file.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    out = [x.to(device) if x.dim() == 3 else None for x in items]
    pos = [k for k, x in enumerate(items) if x.dim() == 1]
    if not pos:
        return out  # type: ignore[return-value]
    data = [items[k] for k in pos]
    with _quiet_decoder():
        try:
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            imgs = []
            for k, d in zip(pos, data):  # find the item that fails, and name it
                try:
                    imgs.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                except RuntimeError as e:
                    raise DataError(f"{names[k]}: cannot decode JPEG ({e}); fix or remove it") from e
    for k, img in zip(pos, imgs):
        out[k] = img
    return out  # type: ignore[return-value]


def read_encoded(path: str) -> torch.Tensor:
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def pack(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left-aligned uint8 canvas [B, 3, Hmax, Wmax] and the true sizes [B, 2] (h, w)."""
    hs = [int(x.shape[1]) for x in images]
    ws = [int(x.shape[2]) for x in images]
    canvas = images[0].new_zeros(len(images), 3, max(hs), max(ws))
    for b, x in enumerate(images):
        canvas[b, :, :hs[b], :ws[b]] = x
    sizes = torch.tensor(list(zip(hs, ws)), dtype=torch.int64, device=canvas.device)
    return canvas, sizes


class NvjpegLoader(CanvasLoader):
    """Batched GPU (or CPU) JPEG decoding + batched augmentation; yields :class:`Batch` on ``device``.

    A background thread prepares up to ``prefetch`` batches ahead, on its own CUDA stream on a GPU (the training
    stream waits for that batch's event only), so reading and decoding overlap with training.
    """

    def __init__(self, split: Split | None, recipe: Recipe, global_batch: int, rank: int, world: int,
                 device: torch.device, seed: int = 0, prefetch: int = 2, cache_dir: str | Path | None = None,
                 beton: Beton | None = None, augment_impl: str = "torch"):
        if (split is None) == (beton is None):
            raise ValueError("NvjpegLoader reads either a folder split or a .beton (loaders.beton.Beton)")
        self.split, self.beton, self.prefetch = split, beton, max(1, prefetch)
        if split is not None:
            num_samples, self.num_classes, source = len(split), len(split.classes), split.root
            self.paths = [p for p, _ in split.samples]
            self.labels = torch.as_tensor(split.labels)
        else:
            num_samples, source = len(beton), beton.path
            self.labels = torch.as_tensor(beton.ints("label"))
            self.num_classes = int(self.labels.max()) + 1
            self.image_field = beton.image_field()
        super().__init__(recipe, device, augment_impl, num_samples=num_samples, global_batch=global_batch,
                         rank=rank, world=world, seed=seed, source=source)
        self.cpu_ids = cpu_path_files(split, cache_dir) if split is not None else set()

    def _encoded(self, ids: list[int]) -> tuple[list[torch.Tensor], list[str]]:
        """Per sample: JPEG bytes for nvJPEG, or the decoded image (CPU-path files, raw .beton images)."""
        items, names = [], []
        if self.beton is None:
            for i in ids:
                path = self.paths[i]
                items.append(decode_rgb(path) if i in self.cpu_ids else read_encoded(path))
                names.append(path)
            return items, names
        for i in ids:
            mode, h, w, data = self.beton.image(i, self.image_field)
            buf = torch.from_numpy(data)
            items.append(buf.view(h, w, 3).permute(2, 0, 1) if mode == RAW else buf)
            names.append(f"{self.beton.path} sample {i}")
        return items, names

    def make_batch(self, step: int, ids: list[int]) -> Batch:
        """The Batch of one step of the current epoch (read, decode, pack, augment on the device)."""
        canvas, sizes = pack(decode_batch(*self._encoded(ids), self.device))
        index = torch.tensor(ids, dtype=torch.int64)
        return self.canvas_batch(step, canvas, sizes, index.to(self.device), self.labels[index].to(self.device))

    def __iter__(self) -> Iterator[Batch]:
        steps = self.step_ids()
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
    beton = None
    if cfg.data.beton:
        refuse_class_subset(cfg.data, f"the .beton {cfg.data.beton}")
        beton, split = Beton(cfg.data.beton), None
    else:
        split = training_split(cfg.data, split)  # the scan, class subset and verification of every command
    return NvjpegLoader(split, recipe, cfg.data.batch_size, rank, world, torch.device(device), seed=cfg.run.seed,
                        prefetch=cfg.data.prefetch, cache_dir=default_cache_dir(cfg.data.cache_dir), beton=beton,
                        augment_impl=cfg.data.augment_impl)
