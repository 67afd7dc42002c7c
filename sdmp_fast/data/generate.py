"""Synthetic ImageNet-style JPEG folders with photograph-like content, for tests and loader benchmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_jpeg_folder(root: Path, classes: int = 3, per_class: int = 12,
                      sizes: tuple[tuple[int, int], ...] = ((48, 40), (64, 52), (40, 64)),
                      quality: int = 90, seed: int = 0) -> Path:
    """Write an ImageNet-style folder of textured RGB JPEGs (for tests and loader benchmarks).

    Content is natural-image-like rather than flat: smooth colour gradients, a few blurred blobs and
    pixel noise, so JPEG sizes and decode costs resemble photographs. ``sizes`` are (width, height)
    and cycle over the images, giving varied sizes and aspect ratios.
    """
    from PIL import Image
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in range(classes):
        d = root / f"class_{c:03d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[(c + i) % len(sizes)]
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            img = np.empty((h, w, 3), np.float32)
            for ch in range(3):
                (fx, fy), ph = rng.uniform(0.5, 4, 2) / max(w, h) * 2 * np.pi, rng.uniform(0, 2 * np.pi)
                img[..., ch] = 128 + 60 * np.sin(xx * fx + yy * fy + ph)
            for _ in range(4):
                cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * max(w, h)
                blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
                img += blob[..., None] * rng.uniform(-90, 90, 3)
            img += rng.normal(0, 10, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"img_{i:04d}.jpg", quality=quality)
    return root
