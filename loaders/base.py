"""What every loader shares: the sharded-loader state of the ``Loader`` contract, and views cut from a canvas.

Every loader follows one sharding rule (:mod:`sdmp_fast.data.sharding`): per-rank batch = global batch / world,
floor(samples / global batch) steps per epoch on every rank, full batches only (SDMP pairs row i with row
B-1-i), and ``set_epoch(epoch, start_step)`` chooses what the next iteration reads.
"""
from __future__ import annotations

from pathlib import Path

import torch

from sdmp_fast.augment import sample_view_params
from sdmp_fast.augment.recipes import Recipe
from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import DataError
from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.kernels import select_apply_views
from sdmp_fast.streams import step_generator


class ShardedLoader:
    """The state and arithmetic of :class:`sdmp_fast.batch.Loader` that no loader does differently.

    A base class rather than helper functions: ``set_epoch`` writes the (epoch, start step) that each loader's
    ``__iter__`` (and, for dali and ffcv, a pipeline built per epoch) reads, so the state and the methods that
    read and write it belong in one place; a subclass adds only how it reads and decodes.

    Args:
        num_samples: samples in the split, before sharding.
        global_batch: ``data.batch_size``, summed over ranks.
        source: names the data in the error raised when it holds fewer than one global batch.
    """

    def __init__(self, num_samples: int, global_batch: int, rank: int, world: int, seed: int,
                 source: str | Path):
        if steps_per_epoch(num_samples, global_batch) < 1:
            raise DataError(f"{source}: {num_samples} images are fewer than one global batch ({global_batch}); "
                            "lower data.batch_size")
        self.num_samples, self.global_batch, self.batch_size = num_samples, global_batch, global_batch // world
        self.rank, self.world, self.seed = rank, world, seed
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        """Steps per epoch, equal on every rank."""
        return steps_per_epoch(self.num_samples, self.global_batch)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = epoch, start_step

    def step_ids(self, epoch: int | None = None, start_step: int | None = None) -> list[list[int]]:
        """This rank's sample ids of each step of ``epoch`` from ``start_step`` on (default: the ``set_epoch`` ones)."""
        return rank_batches(self.num_samples, self.global_batch, self.rank, self.world, self.seed,
                            self.epoch if epoch is None else epoch, self.start if start_step is None else start_step)


class DevicePrefetcher:
    """Host batches to ``device``, the copy of batch n+1 overlapping step n.

    On CUDA each batch is copied on a side stream as soon as it arrives, before the previous one is handed out,
    so the copy runs while the step queued after that hand-out computes; the training stream waits for the
    copy's event only (not the side stream's later work), and the tensors are marked as used on the training
    stream so the allocator keeps them. From pinned host memory (``Batch.pin_memory``) the copy is
    asynchronous. Elsewhere a plain ``Batch.to``. ``events``: each copy's done-event (``timing=True``: timed).
    """

    def __init__(self, batches, device: torch.device, timing: bool = False):
        self.batches, self.device, self.timing = batches, torch.device(device), timing
        self.events: list = []

    def __iter__(self):
        if self.device.type != "cuda":
            for b in self.batches:
                yield b.to(self.device)
            return
        side = torch.cuda.Stream(self.device)
        pending = None
        for host in self.batches:
            with torch.cuda.stream(side):
                # (pinned host memory is held by torch's host allocator until this copy has run)
                ready = (host.to(self.device), torch.cuda.Event(enable_timing=self.timing))
                ready[1].record(side)
            self.events.append(ready[1])
            if pending is not None:
                yield self._hand_out(*pending)
            pending = ready
        if pending is not None:
            yield self._hand_out(*pending)

    def _hand_out(self, batch: Batch, copied) -> Batch:
        current = torch.cuda.current_stream(self.device)
        current.wait_event(copied)
        for t in batch.tensors():
            t.record_stream(current)
        return batch


class CanvasLoader(ShardedLoader):
    """A loader whose images arrive decoded as one uint8 canvas per batch (nvjpeg, ffcv): every view of the recipe
    is made from that canvas by the batched augmentation (:mod:`sdmp_fast.augment`) on the training device."""

    def __init__(self, recipe: Recipe, device: torch.device, augment_impl: str, **shard):
        self.apply_views = select_apply_views(augment_impl)  # data.augment_impl, chosen once
        super().__init__(**shard)
        self.recipe, self.device = recipe, torch.device(device)

    def canvas_batch(self, step: int, canvas: torch.Tensor, sizes: torch.Tensor, index: torch.Tensor,
                     label: torch.Tensor) -> Batch:
        """The Batch of one step of the current epoch.

        Args:
            canvas: uint8 ``[B, 3, Hmax, Wmax]`` on the device, each image top-left aligned.
            sizes: int64 ``[B, 2]``, each image's (h, w): crop boxes are drawn relative to it.
            index, label: int64 ``[B]`` on the device.
        """
        # one generator per (seed, rank, epoch, step): a resumed run draws what an uninterrupted one would
        gen = step_generator(self.seed, self.rank, self.epoch, step, self.device)
        params = sample_view_params(self.recipe, sizes, gen)
        return Batch(views=self.apply_views(canvas, sizes, params, self.recipe), index=index, label=label)
