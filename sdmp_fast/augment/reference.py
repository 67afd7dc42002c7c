"""Per-sample view augmentation in torchvision ops: the reference the batched and Triton paths are checked against.

``apply_view`` cuts one augmented, normalised view of one decoded image as a ``ViewSpec`` says, drawing
every random value from the given generator in a fixed order (``rrc_params`` is torchvision's
RandomResizedCrop sampling, including its fallback).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from sdmp_fast.augment.recipes import ViewSpec

# ViewSpec.interpolation -> torchvision's mode; on uint8 CPU tensors both run torch's antialiased uint8 path,
# which rounds like PIL's (tests/augment/test_reference.py)
MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


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
    x = TF.resized_crop(img, top, left, h, w, [spec.size, spec.size], interpolation=MODES[spec.interpolation],
                        antialias=True)
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
