"""Loaders: each turns a data source into :class:`sdmp_fast.batch.Batch` objects.

Registered as import strings, so ``import loaders`` imports no optional backend (DALI, FFCV).
Every loader is built as ``build(cfg, recipe, rank=, world=, device=)`` and follows one sharding rule:
per-rank batch = data.batch_size / world, floor(samples / data.batch_size) steps per epoch on every
rank, full batches only (SDMP pairs row i with row B-1-i).

Each loader declares what it reads and implements (:class:`LoaderInfo`); this module is the one place
that knows it: :func:`check_config` (the combinations of ``data.*`` a loader accepts), the pretraining
command (whether there is a folder to scan) and the evaluation commands (:func:`evaluation_loaders`).
"""
from __future__ import annotations

from dataclasses import dataclass

from sdmp_fast.registry import LOADERS
from sdmp_fast.schema import need


@dataclass(frozen=True)
class LoaderInfo:
    """What a loader reads and implements.

    Args:
        reads: its sources: "folder" (an image folder, ``data.path``), "beton" (``data.beton``), "webdataset"
            (``data.format=webdataset`` shards in ``data.path``); empty = it makes its own data.
        augment_impl: its views come from the batched augmentation that ``data.augment_impl`` chooses.
        evaluation: the evaluation commands implement its evaluation recipe.
    """
    reads: tuple[str, ...]
    augment_impl: bool = False
    evaluation: bool = False


LOADERS.register_lazy("torch", "loaders.torch_folder:build",
                      help="reference: ImageFolder-style reading, PIL decode, per-sample torch augmentation in workers (CPU)",
                      meta=LoaderInfo(reads=("folder",), evaluation=True))
LOADERS.register_lazy("synthetic", "loaders.synthetic:build",
                      help="random normalised views made on the training device (compute-only ceiling, tests)",
                      meta=LoaderInfo(reads=()))
LOADERS.register_lazy("dali", "loaders.dali:build",
                      help="DALI: decode once, every view and augmentation in one pipeline (nvJPEG + GPU ops on a GPU, CPU ops otherwise)",
                      install="pip install nvidia-dali-cuda130==2.4.0 "
                              "(or make setup)",
                      meta=LoaderInfo(reads=("folder", "webdataset")))
LOADERS.register_lazy("nvjpeg", "loaders.nvjpeg:build",
                      help="batched torchvision decode_jpeg (nvJPEG on a GPU, CPU otherwise) + batched augmentation "
                           "(sdmp_fast.augment) on the device; no DALI needed",
                      meta=LoaderInfo(reads=("folder", "beton"), augment_impl=True))
LOADERS.register_lazy("ffcv", "loaders.ffcv_loader:build",
                      help="FFCV .beton (data.beton=PATH): each image decoded once by ffcv into a canvas, every view made "
                           "by the batched augmentation (sdmp_fast.augment) on the device",
                      install="pip install ffcv==1.0.2 after the apt packages of scripts/setup.sh (or make setup)",
                      meta=LoaderInfo(reads=("beton",), augment_impl=True))


def info(name: str) -> LoaderInfo:
    """The declaration of loader ``name`` (KeyError naming the registered ones if there is none)."""
    return LOADERS.meta(name)


def readers(source: str) -> list[str]:
    """The loaders that read ``source`` ("folder", "beton", "webdataset"), sorted."""
    return [n for n in LOADERS.names() if source in info(n).reads]


def evaluation_loaders() -> list[str]:
    """The loaders whose evaluation recipe the evaluation commands implement."""
    return [n for n in LOADERS.names() if info(n).evaluation]


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def check_config(cfg) -> None:
    """Raise ``ConfigError`` for a pretraining config whose data settings its loader cannot read."""
    d = cfg.data
    need(d.loader in LOADERS, f"data.loader = {d.loader!r}: choose one of {', '.join(LOADERS.names())}")
    me = info(d.loader)
    shards = readers("webdataset")
    need(d.format == "folder" or "webdataset" in me.reads,
         f"data.format = 'webdataset' is read by the {_listed(shards)} loader{'s' if len(shards) > 1 else ''} only, "
         f"not data.loader = {d.loader!r}; use --loader {shards[0]}")
    need(d.format == "folder" or not cfg.run.knn,
         "run.knn reads the k-NN bank and queries from an image folder; with data.format = 'webdataset' set "
         "run.knn=false (and evaluate the exported backbone on a folder)")
    betons = readers("beton")
    need(not d.beton or "beton" in me.reads,
         f"data.beton is read by the {_listed(betons)} loader{'s' if len(betons) > 1 else ''} "
         f"(--loader {' / '.join(betons)}), not data.loader = {d.loader!r}")
    need("folder" in me.reads or "beton" not in me.reads or bool(d.beton),
         f"--loader {d.loader} reads an FFCV .beton: set data.beton=PATH (write one with python -m loaders.write_beton "
         "SRC OUT.beton)")
    batched = [n for n in LOADERS.names() if info(n).augment_impl]
    on_folders = [n for n in batched if "folder" in info(n).reads]
    need(d.augment_impl == "torch" or me.augment_impl,
         f"data.augment_impl = 'triton' replaces the batched augmentation of the {_listed(batched)} loaders; "
         f"data.loader = {d.loader!r} does not use it (set data.augment_impl=torch or --loader {on_folders[0]})")
