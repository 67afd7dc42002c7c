"""View recipes: what every loader must produce, as plain data.

A recipe is a tuple of :class:`ViewSpec` (one per view, in Batch order) plus the normalisation.
The ``torch`` reference loader, the DALI pipelines and the batched GPU augmentation all implement
the same recipes, so their outputs follow one distribution.

MoCo v3 two-view recipe (BYOL-asymmetric; MoCo v3 main_moco.py; docs/method.md, Data and augmentation):
RandomResizedCrop(size, scale=(crop_min, 1), bilinear) -> ColorJitter(0.4, 0.4, 0.2, 0.1) p=0.8 ->
grayscale p=0.2 -> Gaussian blur (view 1: p=1.0, view 2: p=0.1) -> solarize (view 1: p=0, view 2:
p=0.2) -> horizontal flip p=0.5 -> normalise.

DINO multi-crop recipe (DINO main_dino.py DataAugmentationDINO; docs/method.md, DINO): two global views
RandomResizedCrop(global_size, scale=global_scale, bicubic) and ``local_crops`` local views
RandomResizedCrop(local_size, scale=local_scale, bicubic), each with flip p=0.5, ColorJitter(0.4, 0.4, 0.2, 0.1)
p=0.8, grayscale p=0.2; blur p=1.0 (global 1), p=0.1 plus solarize p=0.2 (global 2), p=0.5 (locals).
Views are ordered globals first, then locals (the Batch contract groups views by resolution).

Decision: the blur sigma range (0.1, 2.0) is given in pixels of a 224 px view; for other view sizes
it is scaled by size/224 so that a 32 px Fashion-MNIST view is blurred as much, relative to its size,
as a 224 px ImageNet view (an unscaled sigma of 2 would erase a 32 px image). DINO blurs its 96 px
local views with the same (0.1, 2.0) px range as its 224 px globals, so in the DINO recipe every view,
local or global, uses the range scaled by global_size/224: exactly DINO's sigmas at 224/96 px, and the
same relative blur at 32/16 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class ViewSpec:
    size: int
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction of the original image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio range
    flip_p: float = 0.5
    jitter_p: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels, already scaled to this view's size
    solarize_p: float = 0.0
    solarize_threshold: int = 128  # on the uint8 scale
    interpolation: str = "bilinear"  # of the crop's resize, antialiased: "bilinear" (MoCo v3) or "bicubic" (DINO)

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"ViewSpec.interpolation = {self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")

    @property
    def blur_half(self) -> int:
        """Half the blur kernel size for the largest sigma (0 without blur): static, so no host sync."""
        return math.ceil(3 * max(self.blur_sigma)) if self.blur_p > 0 else 0


@dataclass(frozen=True)
class Recipe:
    name: str
    views: tuple[ViewSpec, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(v.size for v in self.views)


def _sigma(size: int) -> tuple[float, float]:
    return (0.1 * size / 224, 2.0 * size / 224)


def mocov3_recipe(size: int, crop_min: float, mean, std, num_views: int = 2, interpolation: str = "bilinear") -> Recipe:
    """MoCo v3's asymmetric two-view recipe; ``num_views=4`` repeats (view 1, view 2) for SDMP's 'extra' variant.
    MoCo v3 resizes its crops bilinearly (torchvision's RandomResizedCrop default)."""
    scale = (crop_min, 1.0)
    kw = dict(size=size, scale=scale, blur_sigma=_sigma(size), interpolation=interpolation)
    v1 = ViewSpec(blur_p=1.0, solarize_p=0.0, **kw)
    v2 = ViewSpec(blur_p=0.1, solarize_p=0.2, **kw)
    if num_views % 2:
        raise ValueError(f"mocov3_recipe: num_views must be even, got {num_views}")
    return Recipe("mocov3", (v1, v2) * (num_views // 2), tuple(mean), tuple(std))


def dino_recipe(global_size: int, local_size: int, local_crops: int, global_scale: tuple[float, float],
                local_scale: tuple[float, float], mean, std, interpolation: str = "bicubic") -> Recipe:
    """DINO's multi-crop recipe: [global 1, global 2] + ``local_crops`` local views, in that order. DINO resizes
    every crop bicubically (``RandomResizedCrop(..., interpolation=Image.BICUBIC)`` in DataAugmentationDINO)."""
    if local_crops < 0:
        raise ValueError(f"dino_recipe: local_crops must be >= 0, got {local_crops}")
    sigma = _sigma(global_size)  # one pixel range for every view, as DINO (see the module docstring)
    kw = dict(blur_sigma=sigma, interpolation=interpolation)
    g1 = ViewSpec(size=global_size, scale=tuple(global_scale), blur_p=1.0, **kw)
    g2 = ViewSpec(size=global_size, scale=tuple(global_scale), blur_p=0.1, solarize_p=0.2, **kw)
    local = ViewSpec(size=local_size, scale=tuple(local_scale), blur_p=0.5, **kw)
    return Recipe("dino", (g1, g2) + (local,) * local_crops, tuple(mean), tuple(std))
