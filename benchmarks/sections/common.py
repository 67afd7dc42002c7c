"""What the throughput sections share: the run context, the benchmark JPEG set, the two view recipes, the
images/s of a batch iterator, and freeing the device between arms."""
from __future__ import annotations

import argparse
import gc
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from benchmarks import package as pkg
from benchmarks.timing import sync

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LATE = "skipped: past the --budget-s time budget"
SKIPPED_ON_CPU = "skipped on CPU (the Triton interpreter is a correctness tool)"


@dataclass
class Context:
    """One benchmark run: its arguments and device, the results and failures the sections add to, its deadline."""
    args: argparse.Namespace
    device: torch.device
    results: dict
    failures: list[str]
    deadline: float | None = None  # time.monotonic() at which --budget-s runs out
    save: Callable[[], None] = lambda: None  # writes what was measured so far (JSON): after every arm and section

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    def progress(self, section: str, row: dict) -> None:
        """Add one arm's row to ``section`` as soon as it is measured, and save: a crash, hang or kill later keeps it
        (a section that assembles its rows at the end replaces the list with them)."""
        self.results.setdefault(section, []).append(row)
        self.save()


def past(deadline: float | None, margin_s: float = 0.0) -> bool:
    """Whether an arm that needs ``margin_s`` seconds would end past ``deadline`` if it started now."""
    return deadline is not None and time.monotonic() + margin_s > deadline


def folder_sizes(args: argparse.Namespace) -> tuple[int, int, int, int]:
    """(image size, batch, images, local crop size) of the loader and ffcv sections."""
    size, batch = (64, 16) if args.quick else (224, 32)
    return size, batch, 64 if args.quick else args.images, size * 96 // 224


def recipes(size: int, local_size: int, local_crops: int = 8) -> dict:
    """{name: recipe}: MoCo v3's two views and DINO's multi-crop, ImageNet normalisation (names are output keys)."""
    return {"mocov3 two-view": pkg.mocov3_recipe(size, 0.08, IMAGENET_MEAN, IMAGENET_STD),
            f"dino 2x{size} + {local_crops}x{local_size}": pkg.dino_recipe(size, local_size, local_crops, (0.4, 1.0),
                                                                        (0.05, 0.4), IMAGENET_MEAN, IMAGENET_STD)}


_SOURCES: dict[int, tuple] = {}  # generated JPEG sets by image count: written once, shared by the sections


def image_source(data: str | None, images: int) -> tuple:
    """(temporary dir or None, folder, description): ``--data``'s train split, or generated ImageNet-like JPEGs
    (written once per process and image count; ``cleanup_sources`` removes them)."""
    if data is not None:
        root = Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data)
        return None, root, str(root)
    if images not in _SOURCES:
        tmp = tempfile.TemporaryDirectory()
        per_class = max(1, images // 8)
        root = pkg.write_jpeg_folder(Path(tmp.name) / "train", classes=8, per_class=per_class,
                                     sizes=((500, 375), (375, 500), (500, 333), (480, 360)), quality=90)
        _SOURCES[images] = (tmp, root, f"generated: {8 * per_class} JPEGs ~500x375 q90")
    return _SOURCES[images]


def cleanup_sources() -> None:
    for tmp, _, _ in _SOURCES.values():
        tmp.cleanup()
    _SOURCES.clear()


def drain(batches: Iterator, device: torch.device, images: int,
          count: Callable[[object], int] = lambda b: b.size) -> tuple[int, float]:
    """(images, seconds) of ``batches`` after the first (start-up: worker spawn, pipeline build, first decode, is
    not throughput), stopping at ``images`` so that every arm reads the same count."""
    next(batches)
    sync(device)
    t, n = time.perf_counter(), 0
    for b in batches:
        n += count(b)
        if n >= images:
            break
    sync(device)
    return n, time.perf_counter() - t


def free_device(device: torch.device) -> None:
    """Drop the previous arm's trainer (and its CUDA graph pool / compiled code) before the next arm."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def failed(label: str, e: BaseException, failures: list[str]) -> str:
    """Report a failed arm (traceback on stderr, ``label`` in ``failures``) so that the others still run; returns
    the row's status."""
    traceback.print_exc()
    failures.append(f"{label}: {type(e).__name__}: {e}")
    return f"failed: {type(e).__name__}: {e}"
