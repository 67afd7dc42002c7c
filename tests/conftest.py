"""Shared fixtures and markers.

* ``gpu`` tests skip without CUDA; ``dali``/``ffcv`` tests skip without the package unless
  ``SDMP_REQUIRE`` names it (``make test`` sets SDMP_REQUIRE=dali,ffcv), so a broken install fails.
* Every test gets its own SDMP_CACHE (nothing is written to ~/.cache); the Fashion-MNIST JPEG folder
  and the small generated image folder are built once per session.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from sdmp_fast.datasets import write_jpeg_folder

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
def fashion_mnist_root(session_cache) -> Path:
    from sdmp_fast.datasets import FASHION_MNIST_RAW, fashion_mnist_folder
    if not FASHION_MNIST_RAW.is_dir():
        pytest.fail(f"Fashion-MNIST is not installed at {FASHION_MNIST_RAW}: run `make setup` "
                    "(apt-get install dataset-fashion-mnist)")
    return fashion_mnist_folder(str(session_cache), progress=False)
