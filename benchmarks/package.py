"""Every use the benchmarks make of ``sdmp_fast`` and ``loaders``, in one file.

The benchmarks reach the package only through these functions, so that a move inside the package is
adapted here alone. Modules are imported on first use: ``--help`` needs none of them, and importing the
FFCV loader installs a process-wide thread excepthook that a run without FFCV should not get.
"""
from __future__ import annotations

from pathlib import Path

import torch

# the exceptions the benchmarks catch (light modules: no backbone, no kernel)
from sdmp_fast.config import ConfigError  # noqa: F401
from sdmp_fast.data.folders import DataError  # noqa: F401
from sdmp_fast.registry import MissingBackend  # noqa: F401
from sdmp_fast.schema import HelpFormatter  # noqa: F401  (every benchmark's --help: defaults said, no RST markup)

# ----------------------------------------------------------------------------- config and commands

def load_config(config_file: str | Path | None = None, overrides: list[str] | dict | None = None):
    from sdmp_fast.config import load_config as load
    return load(config_file, overrides)


def pick_device(name: str) -> torch.device:
    from sdmp_fast.cli import pick_device as pick
    return pick(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    from sdmp_fast.engine.precision import autocast_dtype as dtype
    return dtype(precision, device)


def run_pretrain(argv: list[str]) -> dict:
    """``python -m sdmp_fast.pretrain ARGV`` in this process, without progress bars; returns its summary."""
    from sdmp_fast.pretrain import run
    return run(argv, progress=False)


def run_linear(argv: list[str]) -> dict:
    from sdmp_fast.linear import run
    return run(argv, progress=False)


def run_finetune(argv: list[str]) -> dict:
    from sdmp_fast.finetune import run
    return run(argv, progress=False)


def folderless_loaders() -> set[str]:
    """Loaders that read no image folder (``pretrain`` passes them no ``--data``)."""
    import loaders
    from sdmp_fast.registry import LOADERS
    return {name for name in LOADERS.names() if not loaders.info(name).reads}


def training_split(cfg):
    """The run's training split, as ``sdmp_fast.pretrain`` loads it (materialised, class subset, verified)."""
    from sdmp_fast.data.splits import load_splits
    return load_splits(cfg.data)[0]


# ----------------------------------------------------------------------------- data and loaders

def scan_folder(root: Path):
    """(split, stray files) of ``root/<class>/<image>``."""
    from sdmp_fast.data.folders import scan_folder as scan
    return scan(root)


def default_cache_dir(cache_dir: str = "") -> Path:
    from sdmp_fast.data.folders import default_cache_dir as cache
    return cache(cache_dir)


def find_data(path: str = ""):
    """The data root of ``data.path`` (``.train``, ``.name``): Fashion-MNIST, a folder or a CIFAR folder."""
    from sdmp_fast.data.sources import find_data as find
    return find(path)


def cifar_help() -> str:
    from sdmp_fast.data.sources import CIFAR_HELP
    return CIFAR_HELP


def cifar_layout(path: str | Path):
    from sdmp_fast.data.sources import cifar_layout as layout
    return layout(path)


def cifar_folder(path: str | Path):
    from sdmp_fast.data.sources import cifar_folder as folder
    return folder(path)


def write_jpeg_folder(root: Path, classes: int, per_class: int, sizes: tuple, quality: int) -> Path:
    from sdmp_fast.data.generate import write_jpeg_folder as write
    return write(root, classes=classes, per_class=per_class, sizes=sizes, quality=quality)


def loader_registry():
    """The LOADERS registry with every shipped loader registered."""
    import loaders  # noqa: F401 - registers the loaders
    from sdmp_fast.registry import LOADERS
    return LOADERS


def build_loader(name: str, cfg, recipe, device: torch.device, split=None):
    """Loader ``name`` for one process (rank 0 of 1); ``split``: the image folder it reads, when it reads one."""
    kwargs = {} if split is None else {"split": split}
    return loader_registry().build(name, cfg, recipe, rank=0, world=1, device=device, **kwargs)


def write_beton(folder: Path, beton: Path, workers: int = 0, cache_dir: str = "", progress: bool = False) -> dict:
    """``folder`` as a .beton with the converter's defaults; returns its summary (images, bytes, images/s)."""
    from loaders.write_beton import write_beton as write
    return write(folder, beton, workers=workers, cache_dir=cache_dir, progress=progress)


def ffcv_loader(beton: Path, recipe, batch: int, device: torch.device, workers: int):
    """The ffcv loader on ``beton`` for one process, seed 0."""
    from loaders.ffcv_loader import FfcvLoader
    return FfcvLoader(str(beton), recipe, batch, 0, 1, device, seed=0, num_workers=workers)


def beton_image_sizes(beton: Path):
    """(stored [N, 2], original [N, 2]) image (height, width) of a .beton, as int64 numpy arrays."""
    import numpy as np

    from loaders.beton import Beton
    b = Beton(beton)
    try:
        stored = np.stack([b.metadata["image"]["height"], b.metadata["image"]["width"]], 1).astype(np.int64)
        original = np.stack([b.ints("height"), b.ints("width")], 1)
    finally:
        b.close()
    return stored, original


# ----------------------------------------------------------------------------- views, mixing, kernels, streams

def mocov3_recipe(size: int, crop_min: float, mean, std):
    from sdmp_fast.augment.recipes import mocov3_recipe as recipe
    return recipe(size, crop_min, mean, std)


def dino_recipe(global_size: int, local_size: int, local_crops: int, global_scale: tuple, local_scale: tuple,
                mean, std):
    from sdmp_fast.augment.recipes import dino_recipe as recipe
    return recipe(global_size, local_size, local_crops, global_scale, local_scale, mean, std)


def sample_view_params(recipe, sizes: torch.Tensor, generator: torch.Generator) -> list:
    from sdmp_fast.augment import sample_view_params as sample
    return sample(recipe, sizes, generator)


def apply_views(images: torch.Tensor, sizes: torch.Tensor, params: list, recipe) -> list[torch.Tensor]:
    from sdmp_fast.augment import apply_views as apply
    return apply(images, sizes, params, recipe)


def finish_view(x: torch.Tensor, params, spec, mean, std) -> torch.Tensor:
    """Colour, blur, solarize and normalisation of already cropped (and flipped) float views."""
    from sdmp_fast.augment import finish_view as finish
    return finish(x, params, spec, mean, std)


def reference_view(img: torch.Tensor, spec, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The per-sample torchvision view of the reference (torch) loader."""
    from sdmp_fast.augment.reference import apply_view
    return apply_view(img, spec, g, mean, std)


def reference_crop_box(height: int, width: int, scale, ratio, g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the reference loader's RandomResizedCrop."""
    from sdmp_fast.augment.reference import rrc_params
    return rrc_params(height, width, scale, ratio, g)


def triton_apply_views():
    from sdmp_fast.kernels import select_apply_views
    return select_apply_views("triton")


def mix(x: torch.Tensor, lam: torch.Tensor, op: str, generator: torch.Generator) -> torch.Tensor:
    from sdmp_fast.mixing import mix as batched_mix
    return batched_mix(x, lam, op, generator=generator)


def triton_mix():
    from sdmp_fast.kernels import select_mix
    return select_mix("triton")


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The reference loader's per-sample stream."""
    from sdmp_fast.streams import sample_generator as gen
    return gen(seed, epoch, index)


def step_generator(seed: int, rank: int, epoch: int, step: int, device: torch.device) -> torch.Generator:
    """The batched loaders' per-step stream."""
    from sdmp_fast.streams import step_generator as gen
    return gen(seed, rank, epoch, step, device)


# ----------------------------------------------------------------------------- models and training

def build_backbone(cfg):
    from sdmp_fast.models import build_backbone as build
    return build(cfg)


def build_trainer(cfg, loader_name: str, device: torch.device, out_dir: Path, split=None,
                  total_steps: int | None = None):
    """(trainer, loader, recipe, resolved) as ``sdmp_fast.pretrain`` builds them in one process: the method seeded
    by ``run.seed`` (channels-last when the config says so) and loader ``loader_name`` under the engine's Trainer.

    ``total_steps`` replaces the resolved schedule length (a benchmark longer than the config's run).
    """
    import dataclasses

    from sdmp_fast.config import resolve
    from sdmp_fast.engine.trainer import Trainer
    from sdmp_fast.methods import build_method
    from sdmp_fast.methods.base import method_recipe
    torch.manual_seed(cfg.run.seed)
    method = build_method(cfg, build_backbone(cfg)).to(device)
    if cfg.model.channels_last:
        method = method.to(memory_format=torch.channels_last)
    recipe = method_recipe(cfg)
    loader = build_loader(loader_name, cfg, recipe, device, split)
    res = resolve(cfg, loader.num_samples)
    if total_steps is not None:
        res = dataclasses.replace(res, total_steps=total_steps)
    return Trainer(cfg, res, method, loader, device, out_dir), loader, recipe, res


# ----------------------------------------------------------------------------- figures


def bar_png(panels: dict, path: Path, ylabel: str, title: str = "") -> str:
    """Grouped bars with their seed spread, {panel: {group: {series: values}}}, as a PNG at ``path``; returns the
    Markdown line that shows it, or says why there is none (no panel; matplotlib missing: ``.[plot]``)."""
    if not panels:
        return "No figure: nothing was measured."
    from sdmp_fast.plot import bar_figure, save
    try:
        fig = bar_figure(panels, {name: ylabel for name in panels}, title)
    except MissingBackend as e:
        return f"No figure: {e}"
    save(fig, path)
    return f"![{title or path.stem}]({path.name})"
