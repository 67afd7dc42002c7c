"""Decoding one image, and the deterministic evaluation view (resize, centre crop, normalise) in batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.streams import sample_generator

MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


@dataclass(frozen=True)
class EvalSpec:
    """Deterministic evaluation view: resize the short side to ``resize`` (antialiased ``interpolation``: bilinear
    or bicubic), centre crop ``size``."""
    size: int
    resize: int
    interpolation: str = "bilinear"


def eval_spec(size: int, interpolation: str = "bilinear") -> EvalSpec:
    """Resize 256 / centre crop 224, scaled to ``size``; ``interpolation`` is the method's (DINO's evaluation:
    bicubic, ``Resize(256, interpolation=3)``; MoCo v3's: bilinear).

    Below 64 px (Fashion-MNIST, CIFAR) the whole image is resized to ``size`` without a crop: the
    objects fill those images and a 224/256 centre crop would cut them.
    """
    if interpolation not in MODES:
        raise ValueError(f"evaluation interpolation {interpolation!r}: choose one of {', '.join(MODES)}")
    resize = size if size < 64 else int(round(size * 256 / 224))
    return EvalSpec(size=size, resize=resize, interpolation=interpolation)


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


def apply_eval(img: torch.Tensor, spec: EvalSpec, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Deterministic evaluation view: resize the short side, centre crop, normalise."""
    mode = MODES[spec.interpolation]
    if spec.resize == spec.size:
        x = TF.resize(img, [spec.size, spec.size], interpolation=mode, antialias=True)
    else:
        x = TF.center_crop(TF.resize(img, spec.resize, interpolation=mode, antialias=True), [spec.size, spec.size])
    return (x.float().div_(255) - mean) / std


class SeededImages(torch.utils.data.Dataset):
    """Training images keyed by (epoch, sample index): the decoded image with its own generator, seeded with
    (seed, epoch, index), so what a sample becomes depends neither on the worker count nor on scheduling.
    Subclasses turn :meth:`sample` into their item; ``mean``/``std`` are ``[3, 1, 1]`` tensors for them."""

    def __init__(self, split: Split, seed: int, mean, std):
        self.split, self.seed = split, seed
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.split)

    def sample(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Generator, int, int]:
        """(uint8 image, its generator, sample index, label) of ``key = (epoch, index)``."""
        epoch, index = key
        path, label = self.split.samples[index]
        return decode_rgb(path), sample_generator(self.seed, epoch, index), index, label


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
