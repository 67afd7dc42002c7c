"""The ``ffcv`` loader: FFCV reads and decodes each image ONCE; every view is made from that decode by the
batched augmentation of :mod:`sdmp_fast.augment` on the training device.

FFCV runs one pipeline per field and can take only one crop from a decode, so FFCV-SSL decodes the JPEG
again for every view (10 decodes per image for DINO's 2 + 8 crops). Here the image field's pipeline is
:class:`CanvasDecoder`: it decodes each JPEG (libjpeg-turbo, FFCV's compiled code, in FFCV's threads) into
a fixed-size uint8 canvas ``[B, Hmax, Wmax, 3]`` (each image top-left aligned; Hmax x Wmax is the largest
stored image of the file), copied to the device (``ToDevice(non_blocking=True)``, overlapped by FFCV's
own CUDA streams) when there is a GPU. The true size of each decoded image is the ``height``/``width`` of the
image field's metadata (the size stored in the .beton, after ``--max-resolution``), looked up by the
sample index from a table on the device. Then ``augment.sample_view_params`` + ``augment.apply_views`` make
every view of the recipe (ffcv 1.0.2 has no grayscale, solarize, blur or hue operators anyway).

Differences from the reference (``torch``) augmentation distribution:

* crop boxes are drawn relative to the STORED image. ``write_beton`` caps the longer side at
  ``--max-resolution`` (default 400) keeping the aspect ratio (up to FFCV's truncation to whole pixels),
  so the crop's area fraction and aspect ratio have the reference distribution up to that rounding; what
  changes is the pixel budget: a crop of a large original is resized from fewer pixels (more upsampling
  for large views of small crops). ``benchmarks/throughput.py --only ffcv_dist`` measures the crop-area
  and aspect histograms against the ``torch`` loader's (``docs/performance.md``);
* the JPEG was re-encoded by the converter (quality 90 by default): small pixel differences;
* colour jitter runs in a fixed order (see :mod:`sdmp_fast.augment`).

Order and sharding: ``data.order=random`` follows the sharding rule every loader shares
(``sdmp_fast.data.sharding``): the same sample ids per step and rank as the ``torch``, ``dali`` and ``nvjpeg``
loaders, equal steps on every rank, full batches only. It is installed as FFCV's traversal order, so FFCV's
page scheduling sees it. ``data.order=quasi_random`` is FFCV's page-local order (for data larger than RAM,
with ``data.os_cache=false``); FFCV does not support it with several processes, so it is rejected then.
A resumed run skips the steps already done in the epoch (both orders are functions of seed and epoch).

Randomness of the views: one generator per step seeded from (seed, rank, epoch, step), as the nvjpeg loader.

The GPU machines this project is tested on cannot install ffcv; the ``ToDevice`` hand-off has not run on a
GPU here (the CPU path, without ``ToDevice``, is what the tests exercise). ``--loader nvjpeg data.beton=``
reads the same file without ffcv and decodes on the GPU.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch

from sdmp_fast.augment import sample_view_params
from sdmp_fast.kernels import select_apply_views
from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import DataError
from sdmp_fast.data.splits import refuse_class_subset
from sdmp_fast.augment.recipes import Recipe

from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.streams import step_generator

_torch_threads = torch.get_num_threads()  # importing ffcv sets torch's CPU threads to 1 (see _keep_torch_threads)
try:
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder
    from ffcv.libffcv import imdecode, memcpy
    from ffcv.loader import Loader, OrderOption
    from ffcv.loader.epoch_iterator import IS_CUDA as FFCV_CUDA, EpochIterator
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler
    from ffcv.transforms import ToDevice, ToTensor
    from ffcv.traversal_order.base import TraversalOrder
    from ffcv.traversal_order.quasi_random import QuasiRandom
except ImportError as e:  # the registry turns this into an install hint
    raise ImportError(f"the ffcv loader needs ffcv ({e})") from e

torch.set_num_threads(_torch_threads)


def _keep_torch_threads() -> None:
    """ffcv's ``Compiler.set_num_threads`` (called at import, by every Loader and at every epoch start) also sets
    torch's intra-op thread count to FFCV's worker count: a CPU training step would silently run on 1 thread.
    Wrap it so that it sets numba's threads only and leaves torch's as the user set them."""
    original = Compiler.__dict__["set_num_threads"].__func__
    if getattr(original, "keeps_torch_threads", False):
        return

    def set_num_threads(cls, n):
        keep = torch.get_num_threads()
        original(cls, n)
        torch.set_num_threads(keep)

    set_num_threads.keeps_torch_threads = True
    Compiler.set_num_threads = classmethod(set_num_threads)


_keep_torch_threads()
IMAGE, LABEL, INDEX = "image", "label", "index"
_THREAD_ERRORS: dict = {}  # ffcv loading thread -> the exception that ended it
_previous_excepthook = threading.excepthook


def _record_loader_errors(args) -> None:
    if isinstance(args.thread, EpochIterator):
        _THREAD_ERRORS[args.thread] = args.exc_value
    _previous_excepthook(args)


threading.excepthook = _record_loader_errors


class CanvasDecoder(SimpleRGBImageDecoder):
    """Decode every image of the batch into a ``[B, Hmax, Wmax, 3]`` uint8 canvas, top-left aligned.

    Works for any mix of image sizes, aspect ratios and storage modes (jpg / raw). Pixels of the canvas outside
    an image are left as they are (the resampling weights are zero there).
    """

    def declare_state_and_memory(self, previous_state):
        hmax, wmax = int(self.metadata["height"].max()), int(self.metadata["width"].max())
        shape, u8 = (hmax, wmax, 3), np.dtype("<u1")
        state = replace(previous_state, jit_mode=True, shape=shape, dtype=u8)
        return state, (AllocationQuery(shape, u8), AllocationQuery((hmax * wmax * 3,), u8))

    def generate_code(self):
        mem_read = self.memory_read
        decode_jpeg = Compiler.compile(imdecode)
        copy = Compiler.compile(memcpy)
        my_range = Compiler.get_iterator()
        jpg = IMAGE_MODES["jpg"]

        def decode(batch_indices, storage, metadata, storage_state):
            canvas, scratch = storage
            failed = 0
            for k in my_range(len(batch_indices)):  # no raise inside: numba would not run the loop in parallel
                field = metadata[batch_indices[k]]
                data = mem_read(field["data_ptr"], storage_state)
                h, w = np.int64(field["height"]), np.int64(field["width"])  # u2 in the metadata: numba's
                # parallel lowering fails on u2 arithmetic
                flat = scratch[k][:h * w * 3]
                if field["mode"] == jpg:
                    if decode_jpeg(data, flat, h, w, h, w, 0, 0, 1, 1, False, False) != 0:
                        failed += 1
                else:
                    copy(data, flat)
                canvas[k, :h, :w, :] = flat.reshape(h, w, 3)
            if failed > 0:
                raise ValueError("libjpeg-turbo cannot decode an image of this batch")
            return canvas[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class _Order(TraversalOrder):
    """This rank's sample ids of an epoch, from ``start`` on: the shared sharding rule, or FFCV's quasi-random
    order (one process) cut to whole batches."""

    def __init__(self, loader, owner: "FfcvLoader"):
        super().__init__(loader)
        self.owner = owner
        self.quasi = QuasiRandom(loader) if owner.order == "quasi_random" else None

    def sample_order(self, epoch: int) -> np.ndarray:
        o = self.owner
        if self.quasi is None:
            steps = rank_batches(o.num_samples, o.global_batch, o.rank, o.world, o.seed, epoch, o.start)
            return np.asarray([i for ids in steps for i in ids], dtype=np.uint64)
        full = np.asarray(self.quasi.sample_order(epoch), dtype=np.uint64)[:len(o) * o.batch_size]
        return full[o.start * o.batch_size:]


class FfcvLoader:
    """FFCV decode-once loader over a ``.beton`` written by ``python -m loaders.write_beton``."""

    def __init__(self, path: str, recipe: Recipe, global_batch: int, rank: int, world: int, device: torch.device,
                 seed: int = 0, num_workers: int = 0, order: str = "random", os_cache: bool = True,
                 batches_ahead: int = 2, augment_impl: str = "torch"):
        from loaders.beton import Beton
        self.path = path
        self.recipe, self.device = recipe, torch.device(device)
        self.apply_views = select_apply_views(augment_impl)  # data.augment_impl, chosen once
        self.global_batch, self.batch_size = global_batch, global_batch // world
        self.rank, self.world, self.seed, self.order = rank, world, seed, order
        if order not in ("random", "quasi_random"):
            raise DataError(f"data.order = {order!r}: choose random or quasi_random")
        if order == "quasi_random" and world > 1:
            raise DataError("data.order=quasi_random: ffcv does not support its quasi-random order with several "
                            f"processes (world size {world}); use data.order=random (the shared sharding rule)")
        if order == "quasi_random" and os_cache:
            raise DataError("data.order=quasi_random works with ffcv's process cache only (it schedules the pages "
                            "it loads): set data.os_cache=false")
        beton = Beton(path)  # clear errors for a missing or foreign file, before ffcv reads it
        try:
            fields = beton.fields
            missing = [f for f in (IMAGE, LABEL, INDEX) if f not in fields]
            if missing or fields[IMAGE] != 2:
                raise DataError(f"{path}: needs an RGB image field {IMAGE!r} and int fields {LABEL!r}, {INDEX!r} "
                                f"(found {fields}); write it with python -m loaders.write_beton")
            meta = beton.metadata[IMAGE]
            sizes = np.stack([meta["height"], meta["width"]], 1).astype(np.int64)
            self.num_samples = len(beton)
            self.num_classes = int(beton.ints(LABEL).max()) + 1
        finally:
            beton.close()
        if steps_per_epoch(self.num_samples, global_batch) < 1:
            raise DataError(f"{path}: {self.num_samples} images are fewer than one global batch ({global_batch}); "
                            "lower data.batch_size")
        self.sizes = torch.from_numpy(sizes).to(self.device)  # [N, 2] stored (h, w), indexed by sample id
        cuda = self.device.type == "cuda"
        tail = [ToTensor()] + ([ToDevice(self.device, non_blocking=True)] if cuda else [])
        pipelines = {IMAGE: [CanvasDecoder()] + tail, LABEL: [IntDecoder()] + list(tail),
                     INDEX: [IntDecoder()] + [ToTensor()] + ([ToDevice(self.device, non_blocking=True)] if cuda else []),
                     "height": None, "width": None}
        self.epoch, self.start = 0, 0
        self.loader = Loader(str(path), batch_size=self.batch_size, num_workers=num_workers,
                             os_cache=os_cache, order=OrderOption.SEQUENTIAL, pipelines=pipelines,
                             drop_last=True, batches_ahead=max(1, batches_ahead), seed=seed)
        self.loader.traversal_order = _Order(self.loader, self)
        self.loader.first_traversal_order = np.zeros(len(self) * self.batch_size, dtype=np.uint64)  # its __len__
        self.outputs = list(self.loader.pipeline_specs)  # the order of FFCV's outputs

    def __len__(self) -> int:
        return steps_per_epoch(self.num_samples, self.global_batch)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = epoch, start_step

    def make_batch(self, step: int, canvas: torch.Tensor, index: torch.Tensor, label: torch.Tensor) -> Batch:
        """Views of one decoded batch (``canvas`` [B, Hmax, Wmax, 3] uint8 on the device)."""
        index, label = index.to(torch.int64), label.to(torch.int64)
        sizes = self.sizes[index]
        gen = step_generator(self.seed, self.rank, self.epoch, step, self.device)
        params = sample_view_params(self.recipe, sizes, gen)
        views = self.apply_views(canvas.permute(0, 3, 1, 2), sizes, params, self.recipe)
        return Batch(views=views, index=index, label=label)

    def decoded(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(step, canvas [B, Hmax, Wmax, 3] uint8, index [B], label [B]) of this epoch from the start step, as
        FFCV delivers them (on the device).

        FFCV's own ``__next__`` waits forever when its loading thread dies (a decoder error, a failed compile):
        here the queue is read with a timeout and a dead thread's exception is raised in this thread instead.
        """
        self.loader.next_epoch = self.epoch  # the traversal order of this epoch, from self.start
        it = iter(self.loader)  # ffcv's EpochIterator: a thread, already started
        try:
            k = 0  # batches delivered
            while True:
                try:
                    item = it.output_queue.get(timeout=0.5)
                except queue.Empty:
                    if it.is_alive():
                        continue
                    err = _THREAD_ERRORS.pop(it, None)
                    ids = (f", samples {rank_batches(self.num_samples, self.global_batch, self.rank, self.world, self.seed, self.epoch, self.start + k)[0]}"
                           if self.order == "random" else "")
                    raise DataError(f"{self.path}: ffcv's loading thread stopped at step {self.start + k} of epoch "
                                    f"{self.epoch}{ids} ({type(err).__name__}: {err}); if an image is damaged, "
                                    "write the .beton again from the source folder") from err
                if item is None:
                    return
                slot, out = item
                if FFCV_CUDA:  # as ffcv's __next__: the consumer's stream waits for this batch's copies
                    it.current_stream.wait_stream(it.cuda_streams[slot])
                got = dict(zip(self.outputs, out))
                yield self.start + k, got[IMAGE], got[INDEX].view(-1), got[LABEL].view(-1)
                k += 1
        finally:
            it.close()

    def __iter__(self) -> Iterator[Batch]:
        for step, canvas, index, label in self.decoded():
            yield self.make_batch(step, canvas, index, label)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split=None) -> FfcvLoader:
    """Build the ffcv loader over ``data.beton`` (``split`` is not used: the .beton is the data)."""
    if not cfg.data.beton:
        raise DataError("--loader ffcv reads an FFCV .beton: set data.beton=PATH "
                        "(write one with python -m loaders.write_beton SRC_DIR OUT.beton)")
    refuse_class_subset(cfg.data, f"the .beton {cfg.data.beton}")
    return FfcvLoader(cfg.data.beton, recipe, cfg.data.batch_size, rank, world, torch.device(device),
                      seed=cfg.run.seed, num_workers=cfg.data.num_workers, order=cfg.data.order,
                      os_cache=cfg.data.os_cache, batches_ahead=cfg.data.prefetch, augment_impl=cfg.data.augment_impl)
