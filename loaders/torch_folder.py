"""The ``torch`` reference loader: ImageNet-style folder, PIL decode, per-sample torch augmentation.

Slow and correct: it defines the augmentation distribution the fast loaders are checked against.
Each sample's randomness comes from a generator seeded with (seed, epoch, sample index), so the
views do not depend on the number of workers or on scheduling, and a run resumed at (epoch, step)
sees exactly the batches an uninterrupted run would.

Operations run on uint8 tensors with torchvision's functional ops (``torchvision.transforms.v2.functional``):
RandomResizedCrop with torchvision's parameter sampling (10 tries, then the centre-crop fallback) and
antialiased bilinear resize; colour jitter in a random order (torchvision's ColorJitter semantics);
grayscale; Gaussian blur with kernel size 2*ceil(3 sigma)+1; solarize; flip; then float and normalise.
"""
from __future__ import annotations

from typing import Iterator

import torch

from sdmp_fast.batch import Batch
from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.data.splits import training_split
from sdmp_fast.augment.recipes import Recipe

from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.augment.reference import apply_view
from sdmp_fast.data.images import decode_rgb
from sdmp_fast.streams import sample_generator


class _ViewDataset(torch.utils.data.Dataset):
    """Maps (epoch, sample index) to (views, index, label)."""

    def __init__(self, split: Split, recipe: Recipe, seed: int):
        self.split, self.recipe, self.seed = split, recipe, seed
        self.mean = torch.tensor(recipe.mean).view(3, 1, 1)
        self.std = torch.tensor(recipe.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        path, label = self.split.samples[index]
        img = decode_rgb(path)
        g = sample_generator(self.seed, epoch, index)
        views = [apply_view(img, spec, g, self.mean, self.std) for spec in self.recipe.views]
        return views, index, label


def _collate(items) -> Batch:
    nviews = len(items[0][0])
    views = [torch.stack([it[0][v] for it in items]).contiguous(memory_format=torch.channels_last) for v in range(nviews)]
    return Batch(views=views, index=torch.tensor([it[1] for it in items]), label=torch.tensor([it[2] for it in items]))


class _EpochBatches(torch.utils.data.Sampler):
    """Yields this rank's lists of (epoch, index) keys; set_epoch() picks the epoch and start step."""

    def __init__(self, num_samples: int, global_batch: int, rank: int, world: int, seed: int):
        self.num_samples, self.global_batch, self.rank, self.world, self.seed = num_samples, global_batch, rank, world, seed
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return steps_per_epoch(self.num_samples, self.global_batch) - self.start

    def __iter__(self):
        for ids in rank_batches(self.num_samples, self.global_batch, self.rank, self.world, self.seed, self.epoch, self.start):
            yield [(self.epoch, i) for i in ids]


class FolderLoader:
    """Reference loader over a scanned :class:`Split`; yields :class:`Batch` on ``device``."""

    def __init__(self, split: Split, recipe: Recipe, global_batch: int, rank: int, world: int,
                 device: torch.device, seed: int = 0, num_workers: int = 2):
        self.split, self.recipe, self.device = split, recipe, torch.device(device)
        self.global_batch, self.batch_size = global_batch, global_batch // world
        self.num_samples, self.num_classes = len(split), len(split.classes)
        if steps_per_epoch(len(split), global_batch) < 1:
            raise DataError(f"{split.root}: {len(split)} images are fewer than one global batch ({global_batch}); "
                            "lower data.batch_size")
        self.sampler = _EpochBatches(len(split), global_batch, rank, world, seed)
        self.loader = torch.utils.data.DataLoader(
            _ViewDataset(split, recipe, seed), batch_sampler=self.sampler, num_workers=num_workers,
            collate_fn=_collate, pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None)

    def __len__(self) -> int:
        return steps_per_epoch(self.num_samples, self.global_batch)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.sampler.epoch, self.sampler.start = epoch, start_step

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield batch.to(self.device)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split: Split | None = None) -> FolderLoader:
    """Build the reference loader for ``split`` (default: the training split of ``data.path``)."""
    split = training_split(cfg.data, split)  # the scan, class subset and verification of every command
    return FolderLoader(split, recipe, cfg.data.batch_size, rank, world, torch.device(device),
                        seed=cfg.run.seed, num_workers=cfg.data.num_workers)
