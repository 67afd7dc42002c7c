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

import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from sdmp_fast.batch import Batch
from sdmp_fast.datasets import DataError, Split, training_split
from sdmp_fast.views import EvalSpec, Recipe, ViewSpec

from .sharding import rank_batches, steps_per_epoch


def decode_rgb(path: str) -> torch.Tensor:
    """Read an image file as a uint8 ``[3, H, W]`` RGB tensor; errors name the file."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes a DataError naming the file
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e}); fix or remove it, "
                        "or set data.skip_corrupt=true to skip unreadable files") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The per-sample random stream: a function of (seed, epoch, index) only."""
    state = np.random.SeedSequence([seed, epoch, index, 0x5D3]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def rrc_params(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
               g: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop box (top, left, h, w) with torchvision's sampling and fallback."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, scale[0], scale[1])
        aspect = math.exp(_uniform(g, *log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def apply_view(img: torch.Tensor, spec: ViewSpec, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One augmented, normalised float view ``[3, size, size]`` of a uint8 ``[3, H, W]`` image."""
    top, left, h, w = rrc_params(img.shape[-2], img.shape[-1], spec.scale, spec.ratio, g)
    x = TF.resized_crop(img, top, left, h, w, [spec.size, spec.size], antialias=True)
    if float(torch.rand((), generator=g)) < spec.jitter_p:
        b, c, s, hue = spec.jitter
        for k in torch.randperm(4, generator=g).tolist():
            if k == 0 and b > 0:
                x = TF.adjust_brightness(x, _uniform(g, max(0.0, 1 - b), 1 + b))
            elif k == 1 and c > 0:
                x = TF.adjust_contrast(x, _uniform(g, max(0.0, 1 - c), 1 + c))
            elif k == 2 and s > 0:
                x = TF.adjust_saturation(x, _uniform(g, max(0.0, 1 - s), 1 + s))
            elif k == 3 and hue > 0:
                x = TF.adjust_hue(x, _uniform(g, -hue, hue))
    if float(torch.rand((), generator=g)) < spec.gray_p:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if float(torch.rand((), generator=g)) < spec.blur_p:
        sigma = _uniform(g, *spec.blur_sigma)
        k = 2 * math.ceil(3 * sigma) + 1
        x = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    if float(torch.rand((), generator=g)) < spec.solarize_p:
        x = TF.solarize(x, threshold=spec.solarize_threshold)
    if float(torch.rand((), generator=g)) < spec.flip_p:
        x = TF.horizontal_flip(x)
    return (x.float().div_(255) - mean) / std


def apply_eval(img: torch.Tensor, spec: EvalSpec, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Deterministic evaluation view: resize the short side, centre crop, normalise."""
    if spec.resize == spec.size:
        x = TF.resize(img, [spec.size, spec.size], antialias=True)
    else:
        x = TF.center_crop(TF.resize(img, spec.resize, antialias=True), [spec.size, spec.size])
    return (x.float().div_(255) - mean) / std


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


class _EvalDataset(torch.utils.data.Dataset):
    def __init__(self, split: Split, indices: Sequence[int], spec: EvalSpec, mean, std):
        self.split, self.indices, self.spec = split, list(indices), spec
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        path, label = self.split.samples[self.indices[k]]
        return apply_eval(decode_rgb(path), self.spec, self.mean, self.std), label


def eval_batches(split: Split, indices: Sequence[int], spec: EvalSpec, mean, std, batch_size: int,
                 num_workers: int = 2) -> torch.utils.data.DataLoader:
    """Deterministic (image, label) batches of ``split[indices]`` in order, for k-NN and linear evaluation."""
    return torch.utils.data.DataLoader(_EvalDataset(split, indices, spec, mean, std), batch_size=batch_size,
                                       shuffle=False, num_workers=num_workers, drop_last=False)


def build(cfg, recipe: Recipe, *, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
          split: Split | None = None) -> FolderLoader:
    """Build the reference loader for ``split`` (default: the training split of ``data.path``)."""
    split = training_split(cfg.data, split)  # the scan, class subset and verification of every command
    return FolderLoader(split, recipe, cfg.data.batch_size, rank, world, torch.device(device),
                        seed=cfg.run.seed, num_workers=cfg.data.num_workers)
