"""Shared fixtures and markers.

* ``gpu`` tests skip without CUDA; ``dali``/``ffcv`` tests skip without the package unless
  ``SDMP_REQUIRE`` names it (``make test`` sets SDMP_REQUIRE=dali,ffcv), so a broken install fails.
* Every test gets its own SDMP_CACHE (nothing is written to ~/.cache); the Fashion-MNIST JPEG folder,
  the small generated image folder and the tiny CIFAR folders are built once per session.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from sdmp_fast.data.generate import write_jpeg_folder

sys.path.insert(0, str(Path(__file__).parent))  # tests/distributed.py and friends

torch.set_num_threads(min(2, torch.get_num_threads()))
REQUIRED = {x.strip() for x in os.environ.get("SDMP_REQUIRE", "").split(",") if x.strip()}


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run `make gpu-check` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def require(module: str, backend: str):
    """importorskip, except that a backend named in SDMP_REQUIRE must import (the test fails otherwise)."""
    if backend in REQUIRED:
        import importlib
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{backend} not installed (pip install -e .[{backend}]; make test installs it)")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdmp_cache")


@pytest.fixture(autouse=True)
def _isolated_cache(session_cache, monkeypatch):
    monkeypatch.setenv("SDMP_CACHE", str(session_cache))


write_image_folder = write_jpeg_folder  # one generator for tests and benchmarks


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """ROOT/train/<3 classes>/*.jpg (12 each) and ROOT/val/<3 classes>/*.jpg (4 each)."""
    root = tmp_path_factory.mktemp("imgs")
    write_image_folder(root / "train", per_class=12)
    write_image_folder(root / "val", per_class=4, seed=1)
    return root


@pytest.fixture(scope="session")
def cifar_dirs(tmp_path_factory) -> dict:
    """Tiny CIFAR folders in the real pickle format (``images.write_cifar``: 20 train and 10 test images each):
    {"cifar10": (ROOT/cifar-10-batches-py, written arrays), "cifar100": (ROOT/cifar-100-python, written arrays)}."""
    from images import write_cifar
    root = tmp_path_factory.mktemp("cifar")
    return {"cifar10": (root / "cifar-10-batches-py", write_cifar(root / "cifar-10-batches-py", "cifar10")),
            "cifar100": (root / "cifar-100-python", write_cifar(root / "cifar-100-python", "cifar100"))}


@pytest.fixture(scope="session")
def fashion_mnist_root(session_cache) -> Path:
    from sdmp_fast.data.sources import FASHION_MNIST_RAW, fashion_mnist_folder
    if not FASHION_MNIST_RAW.is_dir():
        pytest.fail(f"Fashion-MNIST is not installed at {FASHION_MNIST_RAW}: run `make setup` "
                    "(apt-get install dataset-fashion-mnist)")
    return fashion_mnist_folder(str(session_cache), progress=False)


@pytest.fixture(scope="session")
def betons(image_folder, tmp_path_factory):
    """The image folder's train split as .beton files in jpg and raw mode (ffcv's writer; longer side 48 px)."""
    require("ffcv", "ffcv")
    from loaders.write_beton import write_beton
    out = tmp_path_factory.mktemp("beton")
    return {mode: (out / f"{mode}.beton", write_beton(image_folder / "train", out / f"{mode}.beton", max_resolution=48,
                                                      write_mode=mode, workers=1, progress=False))
            for mode in ("jpg", "raw")}


def plain_view(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_p=0.0):
    """A view with only the crop (and optionally the flip): no colour, blur or solarize."""
    from sdmp_fast.augment.recipes import ViewSpec
    return ViewSpec(size=size, scale=scale, ratio=ratio, flip_p=flip_p, jitter_p=0.0, gray_p=0.0)


def crop_fractions(view, recipe):
    """Per sample of a view of coordinate-encoding images (red = x, green = y, 0..255 across the image):
    (width fraction, height fraction, flipped) of the source box, read from the pixels."""
    import torch
    x = view * torch.tensor(recipe.std).view(1, 3, 1, 1) + torch.tensor(recipe.mean).view(1, 3, 1, 1)
    r, g = x[:, 0] * 255, x[:, 1] * 255          # [B, s, s]: encoded x and y
    s = view.shape[-1]
    # the crop maps s output pixels onto the box: the gradient across the view gives the box size
    wf = (r[:, :, -1] - r[:, :, 0]).abs().mean(1) / 255 * s / (s - 1)
    hf = (g[:, -1, :] - g[:, 0, :]).mean(1) / 255 * s / (s - 1)
    flipped = (r[:, :, -1] - r[:, :, 0]).mean(1) < 0
    return wf, hf, flipped


EVAL_TINY = ["--config", str(Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml")]
DINO_TINY = ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.local_crops=2", "data.local_size=16",
             "method.dino_out_dim=128", "method.dino_hidden_dim=64", "method.dino_bottleneck_dim=32"]


@pytest.fixture(scope="session")
def mocov3_run(image_folder, session_cache, tmp_path_factory) -> Path:
    """A 2-step MoCo v3 + SDMP run directory (backbone.pt, config.yaml, knn.json with bank 24, k 5) on image_folder."""
    from sdmp_fast.pretrain import run
    out = tmp_path_factory.mktemp("mocov3_run") / "run"
    run([*EVAL_TINY, "--data", str(image_folder), "--out", str(out), f"data.cache_dir={session_cache}",
         "run.knn=true", "run.knn_bank=24", "run.knn_k=5"], progress=False)
    return out


@pytest.fixture(scope="session")
def dino_run(image_folder, session_cache, tmp_path_factory) -> Path:
    """A 2-step DINO + SDMP run directory (the teacher's backbone exported) on image_folder."""
    from sdmp_fast.pretrain import run
    out = tmp_path_factory.mktemp("dino_run") / "run"
    run([*EVAL_TINY, "--data", str(image_folder), "--out", str(out), f"data.cache_dir={session_cache}", *DINO_TINY],
        progress=False)
    return out


def with_filter(recipe, interpolation: str):
    """``recipe`` with every view's crop resized by ``interpolation`` ("bilinear" or "bicubic")."""
    import dataclasses
    return dataclasses.replace(recipe, views=tuple(dataclasses.replace(v, interpolation=interpolation)
                                                   for v in recipe.views))


def assert_bicubic_views(views, expected, bilinear_views):
    """A DINO recipe's views from a loader: equal to the batched augmentation of that (bicubic) recipe on the
    loader's canvas, and unlike the views of its bilinear twin (the filter reached the resize)."""
    import torch
    assert len(views) == len(expected) == len(bilinear_views)
    for v, e, b in zip(views, expected, bilinear_views):
        torch.testing.assert_close(v, e, atol=1e-6, rtol=0)
        assert (v - b).abs().amax() > 0.05  # normalised units: over 2 levels somewhere in every view
