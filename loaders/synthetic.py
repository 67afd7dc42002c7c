"""Synthetic loader: random normalised views made directly on the training device.

It isolates compute from I/O in benchmarks and makes tests independent of files. Any number of views
and resolutions (those of the recipe). The data is a deterministic function of (seed, rank, epoch, step).
"""
from __future__ import annotations

from typing import Iterator

import torch

from loaders.base import ShardedLoader
from sdmp_fast.augment.recipes import Recipe
from sdmp_fast.batch import Batch
from sdmp_fast.streams import synthetic_generator

NUM_SAMPLES = 51_200  # nominal epoch length (samples), so epochs and schedules behave as with real data
NUM_CLASSES = 10


class SyntheticLoader(ShardedLoader):
    def __init__(self, recipe: Recipe, global_batch: int, rank: int, world: int, device: torch.device,
                 seed: int = 0, num_samples: int = NUM_SAMPLES, dtype: torch.dtype = torch.float32):
        super().__init__(num_samples, global_batch, rank, world, seed, source="synthetic data")
        self.recipe, self.device, self.dtype = recipe, torch.device(device), dtype
        self.num_classes = NUM_CLASSES

    def __iter__(self) -> Iterator[Batch]:
        b = self.batch_size
        for step in range(self.start, len(self)):
            g = synthetic_generator(self.seed, self.epoch, step, self.rank, self.device)
            views = [torch.randn(b, 3, s, s, generator=g, device=self.device, dtype=self.dtype)
                     .contiguous(memory_format=torch.channels_last) for s in self.recipe.sizes]
            first = step * self.global_batch + self.rank * b
            index = torch.arange(first, first + b, device=self.device)
            label = torch.randint(0, NUM_CLASSES, (b,), generator=g, device=self.device)
            yield Batch(views=views, index=index, label=label)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split=None) -> SyntheticLoader:
    """Build the synthetic loader (``split`` is not used: the data is made here)."""
    return SyntheticLoader(recipe, cfg.data.batch_size, rank, world, torch.device(device), seed=cfg.run.seed)
