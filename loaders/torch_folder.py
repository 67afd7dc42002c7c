"""The ``torch`` reference loader: ImageNet-style folder, PIL decode, per-sample torch augmentation in workers.

Slow and correct: it defines the augmentation distribution the fast loaders are checked against
(:mod:`sdmp_fast.augment.reference`). Each sample's randomness comes from a generator seeded with
(seed, epoch, sample index), so the views depend neither on the number of workers nor on scheduling,
and a run resumed at (epoch, step) sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

from typing import Iterator

import torch

from loaders.base import DevicePrefetcher, ShardedLoader
from sdmp_fast.augment.recipes import Recipe
from sdmp_fast.augment.reference import apply_view
from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import Split
from sdmp_fast.data.images import SeededImages
from sdmp_fast.data.splits import training_split


class _ViewDataset(SeededImages):
    """Maps (epoch, sample index) to (views, index, label)."""

    def __init__(self, split: Split, recipe: Recipe, seed: int):
        super().__init__(split, seed, recipe.mean, recipe.std)
        self.recipe = recipe

    def __getitem__(self, key: tuple[int, int]):
        img, g, index, label = self.sample(key)
        views = [apply_view(img, spec, g, self.mean, self.std) for spec in self.recipe.views]
        return views, index, label


def _collate(items) -> Batch:
    nviews = len(items[0][0])
    views = [torch.stack([it[0][v] for it in items]).contiguous(memory_format=torch.channels_last)
             for v in range(nviews)]
    return Batch(views=views, index=torch.tensor([it[1] for it in items]), label=torch.tensor([it[2] for it in items]))


class _EpochBatches(torch.utils.data.Sampler):
    """The loader's lists of (epoch, index) keys for the epoch and start step of its last ``set_epoch``."""

    def __init__(self, owner: ShardedLoader):
        self.owner = owner

    def __len__(self) -> int:
        return len(self.owner) - self.owner.start

    def __iter__(self):
        epoch = self.owner.epoch
        for ids in self.owner.step_ids():
            yield [(epoch, i) for i in ids]


class FolderLoader(ShardedLoader):
    """Reference loader over a scanned :class:`Split`; yields :class:`Batch` on ``device``."""

    def __init__(self, split: Split, recipe: Recipe, global_batch: int, rank: int, world: int,
                 device: torch.device, seed: int = 0, num_workers: int = 2):
        super().__init__(len(split), global_batch, rank, world, seed, source=split.root)
        self.split, self.recipe, self.device = split, recipe, torch.device(device)
        self.num_classes = len(split.classes)
        self.loader = torch.utils.data.DataLoader(
            _ViewDataset(split, recipe, seed), batch_sampler=_EpochBatches(self), num_workers=num_workers,
            collate_fn=_collate, pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None)

    def __iter__(self) -> Iterator[Batch]:
        # on a GPU: batches pinned by the DataLoader's pin-memory thread (Batch.pin_memory), copied to the device
        # on a side stream one step ahead
        yield from DevicePrefetcher(self.loader, self.device)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split: Split | None = None) -> FolderLoader:
    """Build the reference loader for ``split`` (default: the training split of ``data.path``)."""
    split = training_split(cfg.data, split)  # the scan, class subset and verification of every command
    return FolderLoader(split, recipe, cfg.data.batch_size, rank, world, torch.device(device),
                        seed=cfg.run.seed, num_workers=cfg.data.num_workers)
