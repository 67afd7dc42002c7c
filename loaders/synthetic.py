"""Synthetic loader: random normalised views made directly on the training device.

It isolates compute from I/O in benchmarks and makes tests independent of files. Any number of views
and resolutions (those of the recipe). The data is a deterministic function of (seed, rank, epoch, step).
"""
from __future__ import annotations

from typing import Iterator

import torch

from sdmp_fast.augment.recipes import Recipe
from sdmp_fast.batch import Batch
from sdmp_fast.streams import synthetic_generator

NUM_SAMPLES = 51_200  # nominal epoch length (samples), so epochs and schedules behave as with real data
NUM_CLASSES = 10


class SyntheticLoader:
    def __init__(self, recipe: Recipe, global_batch: int, rank: int, world: int, device: torch.device,
                 seed: int = 0, num_samples: int = NUM_SAMPLES, dtype: torch.dtype = torch.float32):
        self.recipe, self.rank, self.world, self.device = recipe, rank, world, torch.device(device)
        self.global_batch, self.batch_size = global_batch, global_batch // world
        self.num_samples, self.seed, self.dtype = num_samples, seed, dtype
        self.num_classes = NUM_CLASSES
        self._epoch, self._start = 0, 0

    def __len__(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self._epoch, self._start = epoch, start_step

    def __iter__(self) -> Iterator[Batch]:
        b = self.batch_size
        for step in range(self._start, len(self)):
            g = synthetic_generator(self.seed, self._epoch, step, self.rank, self.device)
            views = [torch.randn(b, 3, s, s, generator=g, device=self.device, dtype=self.dtype)
                     .contiguous(memory_format=torch.channels_last) for s in self.recipe.sizes]
            first = step * self.global_batch + self.rank * b
            index = torch.arange(first, first + b, device=self.device)
            label = torch.randint(0, NUM_CLASSES, (b,), generator=g, device=self.device)
            yield Batch(views=views, index=index, label=label)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu", split: str = "train") -> SyntheticLoader:
    return SyntheticLoader(recipe, cfg.data.batch_size, rank, world, torch.device(device), seed=cfg.run.seed)
