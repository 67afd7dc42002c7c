"""The config sections shared by the evaluation commands (``sdmp_fast.linear``, ``sdmp_fast.knn``, ``sdmp_fast.finetune``).

Each command's config is a frozen dataclass of these and its own sections, read by ``sdmp_fast.schema``
(defaults < ``--config file.yaml`` < command-line ``section.key=value``, strict).

Data defaults come from the pretraining run: an empty ``data.path``, ``data.image_size = 0`` or an
empty ``data.mean``/``data.std`` mean "as recorded in the export" (``fill_data_defaults``); so does an
empty ``data.class_subset`` when the data is the pretraining run's (``all`` = every class).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from loaders import evaluation_loaders
from sdmp_fast import dist
from sdmp_fast.config import Config, DataConfig
from sdmp_fast.schema import FIXED, FREE, ConfigError, absent, choices, need, recorded_value


# ----------------------------------------------------------------------------- shared sections

@dataclass(frozen=True)
class EvalData:
    path: str = field(default="", metadata={"help": "ImageNet-style folder (train/ and val/); empty = the pretraining run's data.path (whose empty = embedded Fashion-MNIST)", **FREE})
    loader: str = field(default="torch", metadata={"help": "loader whose evaluation recipe reads the images (only torch is implemented)", **FIXED})
    image_size: int = field(default=0, metadata={"help": "side of the evaluated images in pixels; 0 = the pretraining run's data.image_size", **FIXED})
    mean: tuple[float, ...] = field(default=(), metadata={"help": "per-channel normalisation mean (0..1 scale); empty = the pretraining run's", **FIXED})
    std: tuple[float, ...] = field(default=(), metadata={"help": "per-channel normalisation std (0..1 scale); empty = the pretraining run's", **FIXED})
    cache_dir: str = field(default="", metadata={"help": "where derived data (Fashion-MNIST JPEG folder, CIFAR PNG folders) is cached; empty = the pretraining run's, else $SDMP_CACHE or ~/.cache/sdmp_fast", **FREE})
    class_subset: str = field(default="", metadata={"help": "text file of class folder names, one per line (ImageNet-100): train and val keep those classes, labels renumbered in sorted name order; empty = the pretraining run's when data.path is its data, else all classes; 'all' = every class", **FIXED})
    skip_corrupt: bool = field(default=False, metadata={"help": "skip unreadable images (and report how many) instead of failing with their paths", **FREE})
    eval_interpolation: str = field(default="", metadata={"help": "resize of the evaluation view (resize, centre crop; antialiased): empty = the pretraining run's data.eval_interpolation (DINO: bicubic, MoCo v3: bilinear; runs recorded without that key: bilinear); evaluations recorded without this key used bilinear", **choices("", "bilinear", "bicubic"), **absent("bilinear"), **FIXED})
    batch_size: int = field(default=256, metadata={"help": "global batch size (all ranks together)", **FIXED})
    num_workers: int = field(default=2, metadata={"help": "data loading processes per rank (0 = in the main process)", **FREE})


@dataclass(frozen=True)
class LabelledData(EvalData):
    """The data of the commands that train on labels (linear, fine-tuning): which training labels they may use."""
    label_fraction: float = field(default=1.0, metadata={"help": "semi-supervised (Table 3): train on this fraction of the labelled training images, max(1, round(F x n)) per class, drawn with data.label_seed; 1 = all", **FIXED})
    label_subset: str = field(default="", metadata={"help": "semi-supervised: text file of the labelled training images, one per line: a path relative to the train folder (class/file.JPEG) or a file name (SimCLR's 1 %/10 % files); instead of data.label_fraction", **FIXED})
    label_seed: int = field(default=0, metadata={"help": "seed of the data.label_fraction draw (separate from run.seed, so the labelled set can stay fixed)", **FIXED})


@dataclass(frozen=True)
class EvalRun:
    out_dir: str = field(default="", metadata={"help": "output directory; empty = a sub-folder of the pretraining run directory", **FREE})
    seed: int = field(default=0, metadata={"help": "seed of the evaluation's own randomness (head init, data order, augmentation)", **FIXED})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if present, else cpu), 'cpu', 'cuda' or 'cuda:N'", **FREE})
    precision: str = field(default="auto", metadata={"help": "autocast dtype of the backbone: auto = bf16 on CUDA, fp32 on CPU", **choices("auto", "fp32", "bf16", "fp16"), **FIXED})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default", **FREE})


def validate_data(d: EvalData) -> None:
    ok = evaluation_loaders()
    need(d.loader in ok,
         f"data.loader = {d.loader!r}: the evaluation commands implement the evaluation recipe of "
         f"{', '.join(ok)} only (supported: {', '.join(ok)}); use --loader {ok[0]}")
    need(d.image_size == 0 or d.image_size >= 8, f"data.image_size = {d.image_size}: must be 0 (the pretraining run's) or >= 8")
    for key, v in (("data.mean", d.mean), ("data.std", d.std)):
        need(len(v) in (0, 3), f"{key} = {list(v)}: give 3 values (one per channel) or none (the pretraining run's)")
    need(all(x > 0 for x in d.std), f"data.std = {list(d.std)}: every value must be > 0")
    need(d.batch_size >= 1, f"data.batch_size = {d.batch_size}: must be >= 1")
    need(d.num_workers >= 0, f"data.num_workers = {d.num_workers}: must be >= 0")
    if isinstance(d, LabelledData):
        need(0 < d.label_fraction <= 1, f"data.label_fraction = {d.label_fraction}: must be in (0, 1] "
                                        "(0.01 and 0.1 are SimCLR's 1 % and 10 %; 1 = every label)")
        need(d.label_fraction == 1 or not d.label_subset,
             "data.label_fraction and data.label_subset both choose the labelled images: set one of them")


def check_resume_data(resume, saved: dict, d: EvalData) -> None:
    """A checkpoint continues only on the same images: the same class subset and labelled training images."""
    keys = ("class_subset", "label_fraction", "label_subset", "label_seed")
    for key in (k for k in keys if hasattr(d, k)):
        before = saved.get("data", {}).get(key, getattr(type(d)(), key))
        if before != getattr(d, key):
            raise ConfigError(f"cannot resume {resume}: it has data.{key} = {before!r}, this run {getattr(d, key)!r}")


def clip_batch(cfg, images: int, world: int, tag: str, even: bool = False):
    """``cfg`` with ``data.batch_size`` clipped to the ``images`` training images, when it is larger (a small data
    set with the default batch), kept a multiple of ``world`` (and even per rank with ``even``); said on rank 0."""
    gb, step = cfg.data.batch_size, world * (2 if even else 1)
    if gb <= images:
        return cfg
    clipped = images - images % step
    if clipped < step:
        raise ConfigError(f"{images} training image(s) are too few for one batch of {step} (world size {world}"
                          + (", an even batch per rank" if even else "") + ")")
    if dist.is_main():
        print(f"[{tag}] data.batch_size = {gb} is larger than the training set ({images} images): using {clipped}",
              file=sys.stderr)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=clipped))


def validate_run(r: EvalRun) -> None:
    need(r.device == "auto" or r.device == "cpu" or r.device.startswith("cuda"),
         f"run.device = {r.device!r}: use auto, cpu, cuda or cuda:N")
    need(r.threads >= 0, f"run.threads = {r.threads}: must be >= 0")


def fill_data_defaults(d: EvalData, pretrain_config: dict | None) -> EvalData:
    """Replace 'as pretrained' values (empty path, size 0, empty mean/std, empty cache_dir, empty eval_interpolation,
    and an empty class subset when the data is the pretraining run's) by the recorded ones; ``data.class_subset = all``
    becomes empty."""
    rec = (pretrain_config or {}).get("data", {})
    base = DataConfig()
    same_data = not d.path or d.path == rec.get("path", base.path)
    subset = d.class_subset or (rec.get("class_subset", "") if same_data else "")
    return dataclasses.replace(
        d,
        path=d.path or rec.get("path", base.path),
        class_subset="" if subset == "all" else subset,
        cache_dir=d.cache_dir or rec.get("cache_dir", base.cache_dir),
        image_size=d.image_size or int(rec.get("image_size", base.image_size)),
        eval_interpolation=d.eval_interpolation or recorded_value(Config, pretrain_config or {},
                                                                  "data.eval_interpolation"),
        mean=tuple(d.mean or rec.get("mean", base.mean)),
        std=tuple(d.std or rec.get("std", base.std)))
