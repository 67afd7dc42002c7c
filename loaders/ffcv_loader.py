"""The ``ffcv`` loader: FFCV reads and decodes each image of a ``.beton`` once, into a uint8 canvas; every view is
made from that decode by the batched augmentation on the training device.

FFCV runs one pipeline per field and takes one crop per decode, so FFCV-SSL decodes a JPEG again for every view
(10 decodes per image for DINO's 2 + 8 crops); here the image field's pipeline is :class:`CanvasDecoder`.
Written by ``python -m loaders.write_beton``; ``--loader nvjpeg data.beton=`` reads the same file without ffcv.
"""
from __future__ import annotations

import queue
import sys
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch

from loaders.base import CanvasLoader
from loaders.beton import Beton
from sdmp_fast.augment.recipes import Recipe
from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import DataError
from sdmp_fast.data.splits import refuse_class_subset

_torch_threads = torch.get_num_threads()  # importing ffcv sets torch's CPU threads to 1 (see _keep_torch_threads)
try:
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder
    from ffcv.libffcv import imdecode, memcpy
    from ffcv.loader import Loader, OrderOption
    from ffcv.loader.epoch_iterator import IS_CUDA as FFCV_CUDA
    from ffcv.loader.epoch_iterator import EpochIterator
    from ffcv.memory_managers.os_cache import OSCacheManager
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


def _os_cache_reader(self):
    """ffcv's OS-cache reader (the bytes of one sample, by address, from the memory-mapped file: read-only), with
    its numba types built as new read-only instances.

    ffcv's own ``compile_reader`` / ``state_type`` take numba's interned ``uint8[::1]`` type and set
    ``mutable = False`` on it in place, once per Loader. That object is the type of every writable 1-d uint8
    array in the process until then, and a key (whose hash follows ``mutable``) in the overload table of each
    function numba compiled for such arrays, e.g. ``imdecode`` and ``memcpy`` in every image decoder built
    before (their ``scratch`` buffers). When one of those functions is garbage-collected (a finished loader or
    pipeline), numba's finalizer iterates that table, cannot find the key under its new hash and prints
    ``Exception ignored in: <finalize object ...> KeyError: (Array(uint8, 1, 'C', ...``. Here no interned type
    changes, and the reader has the types ffcv meant: read-only bytes in and out, uint64 offsets and sizes."""
    import numba as nb
    data = nb.types.Array(nb.uint8, 1, "C", readonly=True)
    offsets = nb.uint64[::1]

    def read(address, mem_state):
        buf, starts, sizes = mem_state
        return buf[address:address + sizes[np.searchsorted(starts, address)]]

    return Compiler.compile(read, data(nb.uint64, nb.types.Tuple([data, offsets, offsets])))


OSCacheManager.compile_reader = _os_cache_reader
IMAGE, LABEL, INDEX = "image", "label", "index"


_compiled_here = False


def _say_compiling() -> None:
    """Once per process: ffcv's numba compilation of the pipelines makes the first batch wait (no disk cache)."""
    global _compiled_here
    if not _compiled_here:
        _compiled_here = True
        print("[ffcv] numba compiles the decoding pipelines at the first batch of each process (on a CPU about "
              "half a minute): the first step waits for it", file=sys.stderr)


class _EpochIterator(EpochIterator):
    """ffcv's loading thread of one epoch, keeping the exception that ended it for the consumer to raise."""

    error: BaseException | None = None

    def run(self):
        try:
            super().run()
        except BaseException as e:
            self.error = e
            raise  # the thread's exception is still reported by threading.excepthook, as any other thread's


class _Loader(Loader):
    """ffcv's Loader whose epochs run in an :class:`_EpochIterator`.

    ffcv's own iterator hides why its thread died. ``Loader.__iter__`` builds the iterator by the name
    ``EpochIterator`` of its module; that name points at the subclass while ffcv's method runs (the same class
    for every loader, so concurrent iterations agree). Seeing only these loaders' threads, this replaces no
    process-wide hook such as ``threading.excepthook``.
    """

    def __iter__(self):
        module = sys.modules[Loader.__module__]
        module.EpochIterator = _EpochIterator
        try:
            return super().__iter__()
        finally:
            module.EpochIterator = EpochIterator


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
    """This rank's sample ids of an epoch from the owner's start step, installed as FFCV's traversal order so that
    FFCV's page scheduling sees it.

    ``data.order=random``: the sharding rule every loader shares (the same ids per step and rank as the other
    loaders). ``quasi_random``: FFCV's page-local order (data larger than RAM, with ``data.os_cache=false``), cut to
    whole batches; FFCV supports it in one process only.
    """

    def __init__(self, loader, owner: "FfcvLoader"):
        super().__init__(loader)
        self.owner = owner
        self.quasi = QuasiRandom(loader) if owner.order == "quasi_random" else None

    def sample_order(self, epoch: int) -> np.ndarray:
        o = self.owner
        if self.quasi is None:
            return np.asarray([i for ids in o.step_ids(epoch) for i in ids], dtype=np.uint64)
        full = np.asarray(self.quasi.sample_order(epoch), dtype=np.uint64)[:len(o) * o.batch_size]
        return full[o.start * o.batch_size:]


def _check_options(order: str, world: int, os_cache: bool) -> None:
    if order not in ("random", "quasi_random"):
        raise DataError(f"data.order = {order!r}: choose random or quasi_random")
    if order == "quasi_random" and world > 1:
        raise DataError("data.order=quasi_random: ffcv does not support its quasi-random order with several "
                        f"processes (world size {world}); use data.order=random (the shared sharding rule)")
    if order == "quasi_random" and os_cache:
        raise DataError("data.order=quasi_random works with ffcv's process cache only (it schedules the pages "
                        "it loads): set data.os_cache=false")


def _read_header(path: str) -> tuple[int, int, np.ndarray]:
    """(samples, classes, stored (h, w) [N, 2]) of a .beton, with clear errors for a missing or foreign file
    before ffcv reads it."""
    beton = Beton(path)
    try:
        fields = beton.fields
        missing = [f for f in (IMAGE, LABEL, INDEX) if f not in fields]
        if missing or fields[IMAGE] != 2:
            raise DataError(f"{path}: needs an RGB image field {IMAGE!r} and int fields {LABEL!r}, {INDEX!r} "
                            f"(found {fields}); write it with python -m loaders.write_beton")
        meta = beton.metadata[IMAGE]
        sizes = np.stack([meta["height"], meta["width"]], 1).astype(np.int64)
        return len(beton), int(beton.ints(LABEL).max()) + 1, sizes
    finally:
        beton.close()


class FfcvLoader(CanvasLoader):
    """FFCV decode-once loader over a ``.beton`` written by ``python -m loaders.write_beton``.

    Crop boxes are drawn relative to the STORED image, whose longer side ``write_beton`` capped at
    ``--max-resolution`` (aspect ratio kept up to FFCV's whole pixels): the crops' area fraction and aspect ratio
    keep the reference distribution, but a crop of a large original is resized from fewer pixels. The JPEGs were
    re-encoded by the writer (quality 90 by default): small pixel differences from the folder.
    """

    def __init__(self, path: str, recipe: Recipe, global_batch: int, rank: int, world: int, device: torch.device,
                 seed: int = 0, num_workers: int = 0, order: str = "random", os_cache: bool = True,
                 batches_ahead: int = 2, augment_impl: str = "torch"):
        _check_options(order, world, os_cache)
        self.path, self.order = path, order
        if rank == 0 and Compiler.is_enabled:
            _say_compiling()
        num_samples, self.num_classes, sizes = _read_header(path)
        super().__init__(recipe, device, augment_impl, num_samples=num_samples, global_batch=global_batch,
                         rank=rank, world=world, seed=seed, source=path)
        self.sizes = torch.from_numpy(sizes).to(self.device)  # [N, 2] stored (h, w), indexed by sample id
        cuda = self.device.type == "cuda"

        def tail():  # on a GPU ToDevice copies each batch on ffcv's own CUDA streams, overlapped with the step
            return [ToTensor()] + ([ToDevice(self.device, non_blocking=True)] if cuda else [])

        pipelines = {IMAGE: [CanvasDecoder(), *tail()], LABEL: [IntDecoder(), *tail()],
                     INDEX: [IntDecoder(), *tail()], "height": None, "width": None}
        self.loader = _Loader(str(path), batch_size=self.batch_size, num_workers=num_workers,
                              os_cache=os_cache, order=OrderOption.SEQUENTIAL, pipelines=pipelines,
                              drop_last=True, batches_ahead=max(1, batches_ahead), seed=seed)
        self.loader.traversal_order = _Order(self.loader, self)
        self.loader.first_traversal_order = np.zeros(len(self) * self.batch_size, dtype=np.uint64)  # its __len__
        self.outputs = list(self.loader.pipeline_specs)  # the order of FFCV's outputs

    def make_batch(self, step: int, canvas: torch.Tensor, index: torch.Tensor, label: torch.Tensor) -> Batch:
        """Views of one decoded batch (``canvas`` [B, Hmax, Wmax, 3] uint8 on the device)."""
        index, label = index.to(torch.int64), label.to(torch.int64)
        return self.canvas_batch(step, canvas.permute(0, 3, 1, 2), self.sizes[index], index, label)

    def decoded(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(step, canvas [B, Hmax, Wmax, 3] uint8, index [B], label [B]) of this epoch from the start step, as
        FFCV delivers them (on the device).

        FFCV's own ``__next__`` waits forever when its loading thread dies (a decoder error, a failed compile):
        here the queue is read with a timeout and a dead thread's exception is raised in this thread instead.
        """
        self.loader.next_epoch = self.epoch  # the traversal order of this epoch, from self.start
        it = iter(self.loader)  # an _EpochIterator: a thread, already started
        try:
            k = 0  # batches delivered
            while True:
                try:
                    item = it.output_queue.get(timeout=0.5)
                except queue.Empty:
                    if it.is_alive():
                        continue
                    raise self._stopped(self.start + k, it.error) from it.error
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

    def _stopped(self, step: int, err: BaseException | None) -> DataError:
        ids = f", samples {self.step_ids(start_step=step)[0]}" if self.order == "random" else ""
        return DataError(f"{self.path}: ffcv's loading thread stopped at step {step} of epoch {self.epoch}{ids} "
                         f"({type(err).__name__}: {err}); if an image is damaged, write the .beton again from the "
                         "source folder")

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
