"""Strict configs of the evaluation commands (``sdmp_fast.linear``, ``sdmp_fast.knn``, ``sdmp_fast.finetune``).

The rules of ``sdmp_fast/config.py`` for any frozen dataclass made of section dataclasses: defaults <
``--config file.yaml`` < command-line ``section.key=value``; unknown keys, wrong types, duplicated YAML
keys and values outside a field's ``choices`` raise :class:`ConfigError` naming the key. The YAML
reader, the value parser and the type checks are those of ``sdmp_fast.config`` (imported, not copied).

Data defaults come from the pretraining run: an empty ``data.path``, ``data.image_size = 0`` or an
empty ``data.mean``/``data.std`` mean "as recorded in the export" (``fill_data_defaults``).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sdmp_fast.config import (ConfigError, DataConfig, _apply, _split_override, dump_yaml,  # noqa: F401
                              load_yaml, to_dict)

T = TypeVar("T")
EVAL_LOADERS = ("torch",)  # loaders whose evaluation recipe the commands implement


apply_key = _apply  # one implementation of "section.key = value" for every config class


def add_common_arguments(p, aliases: dict[str, str], config_help: str, example: str, resume: bool = True) -> None:
    """The flags every evaluation command has: --pretrained, --config, the data/loader/out aliases, --resume,
    --print-config and the ``section.key=value`` overrides."""
    p.add_argument("--pretrained", help="pretraining run directory (RUN_DIR/backbone.pt) or exported backbone file")
    p.add_argument("--config", help=f"YAML file of overrides of the defaults{config_help}")
    p.add_argument("--data", help=f"alias of {aliases['--data']}")
    p.add_argument("--loader", help=f"alias of {aliases['--loader']} (torch only)")
    p.add_argument("--out", help=f"alias of {aliases['--out']}")
    if resume:
        p.add_argument("--resume", help="checkpoint file, or 'auto' for the newest valid one in the output directory")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help=f"config overrides, e.g. {example}")


def parse_command_line(parser, cls: type[T], aliases: dict[str, str], argv: list[str] | None,
                       extra: tuple[str, ...] = ()):
    """(args, config): the aliases become overrides (after the ones given), then defaults < --config < overrides."""
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after flags
    overrides = list(args.overrides)
    for flag, key in aliases.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.append(f"{key}={value}")
    return args, load_eval_config(cls, args.config, overrides + list(extra))


def cli_main(run, argv: list[str] | None = None) -> int:
    """The commands' ``main``: ``run(argv)``; bad input (config, data, a missing backend) is one ``error:`` line and
    exit code 2."""
    from sdmp_fast.datasets import DataError
    from sdmp_fast.registry import MissingBackend
    try:
        run(argv)
    except (ConfigError, DataError, MissingBackend) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def load_eval_config(cls: type[T], config_file: str | Path | None = None,
                     overrides: list[str] | dict[str, Any] | None = None) -> T:
    """Defaults < YAML file < overrides (``["section.key=value", ...]`` or a dict), type-checked."""
    cfg = cls()
    if config_file:
        for k, v in load_yaml(config_file).items():
            cfg = apply_key(cfg, k, v, str(config_file))
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in (overrides or [])]
    for k, v in items:
        cfg = apply_key(cfg, k, v, "command line")
    return cfg


def need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choices(*names: str) -> dict:
    return {"choices": names}


# ----------------------------------------------------------------------------- shared sections

@dataclass(frozen=True)
class EvalData:
    path: str = field(default="", metadata={"help": "ImageNet-style folder (train/ and val/); empty = the pretraining run's data.path (whose empty = embedded Fashion-MNIST)"})
    loader: str = field(default="torch", metadata={"help": "loader whose evaluation recipe reads the images (only torch is implemented)"})
    image_size: int = field(default=0, metadata={"help": "side of the evaluated images in pixels; 0 = the pretraining run's data.image_size"})
    mean: tuple[float, ...] = field(default=(), metadata={"help": "per-channel normalisation mean (0..1 scale); empty = the pretraining run's"})
    std: tuple[float, ...] = field(default=(), metadata={"help": "per-channel normalisation std (0..1 scale); empty = the pretraining run's"})
    cache_dir: str = field(default="", metadata={"help": "where derived data (Fashion-MNIST JPEG folder) is cached; empty = the pretraining run's, else $SDMP_CACHE or ~/.cache/sdmp_fast"})
    skip_corrupt: bool = field(default=False, metadata={"help": "skip unreadable images (and report how many) instead of failing with their paths"})
    batch_size: int = field(default=256, metadata={"help": "global batch size (all ranks together)"})
    num_workers: int = field(default=2, metadata={"help": "data loading processes per rank (0 = in the main process)"})


@dataclass(frozen=True)
class EvalRun:
    out_dir: str = field(default="", metadata={"help": "output directory; empty = a sub-folder of the pretraining run directory"})
    seed: int = field(default=0, metadata={"help": "seed of the evaluation's own randomness (head init, data order, augmentation)"})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if present, else cpu), 'cpu', 'cuda' or 'cuda:N'"})
    precision: str = field(default="auto", metadata={"help": "autocast dtype of the backbone: auto = bf16 on CUDA, fp32 on CPU", **_choices("auto", "fp32", "bf16", "fp16")})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default"})


def validate_data(d: EvalData) -> None:
    need(d.loader in EVAL_LOADERS,
         f"data.loader = {d.loader!r}: the evaluation commands implement the evaluation recipe of "
         f"{', '.join(EVAL_LOADERS)} only (supported: {', '.join(EVAL_LOADERS)}); use --loader torch")
    need(d.image_size == 0 or d.image_size >= 8, f"data.image_size = {d.image_size}: must be 0 (the pretraining run's) or >= 8")
    for key, v in (("data.mean", d.mean), ("data.std", d.std)):
        need(len(v) in (0, 3), f"{key} = {list(v)}: give 3 values (one per channel) or none (the pretraining run's)")
    need(all(x > 0 for x in d.std), f"data.std = {list(d.std)}: every value must be > 0")
    need(d.batch_size >= 1, f"data.batch_size = {d.batch_size}: must be >= 1")
    need(d.num_workers >= 0, f"data.num_workers = {d.num_workers}: must be >= 0")


def validate_run(r: EvalRun) -> None:
    need(r.device == "auto" or r.device == "cpu" or r.device.startswith("cuda"),
         f"run.device = {r.device!r}: use auto, cpu, cuda or cuda:N")
    need(r.threads >= 0, f"run.threads = {r.threads}: must be >= 0")


def fill_data_defaults(d: EvalData, pretrain_config: dict | None) -> EvalData:
    """Replace 'as pretrained' values (empty path, size 0, empty mean/std, empty cache_dir) by the recorded ones."""
    rec = (pretrain_config or {}).get("data", {})
    base = DataConfig()
    return dataclasses.replace(
        d,
        path=d.path or rec.get("path", base.path),
        cache_dir=d.cache_dir or rec.get("cache_dir", base.cache_dir),
        image_size=d.image_size or int(rec.get("image_size", base.image_size)),
        mean=tuple(d.mean or rec.get("mean", base.mean)),
        std=tuple(d.std or rec.get("std", base.std)))
