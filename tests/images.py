"""Synthetic test images shared by the augmentation tests and the kernel parity cases."""
from __future__ import annotations

import torch


def texture(h: int, w: int, seed: int) -> torch.Tensor:
    """uint8 [3, h, w]: smooth structure plus pixel noise (both filter regimes)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g) * 255
    img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (img + 25 * torch.randn(3, h, w, generator=g)).clamp(0, 255).round().to(torch.uint8)


def canvas_of(images: list[torch.Tensor], seed: int = 99):
    """Top-left aligned canvas with random garbage as padding (it must never leak into a view)."""
    hs, ws = [x.shape[1] for x in images], [x.shape[2] for x in images]
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randint(0, 256, (len(images), 3, max(hs), max(ws)), generator=g, dtype=torch.uint8)
    for b, x in enumerate(images):
        canvas[b, :, :hs[b], :ws[b]] = x
    return canvas, torch.tensor(list(zip(hs, ws)), dtype=torch.int64)
