"""What every command shares: its argument parser, the start of the process and the ``error:`` exit.

Every command takes ``--config FILE``, flags that are aliases of config keys (``--out X`` = ``run.out_dir=X``),
``--print-config`` and ``section.key=value`` overrides before or after any flag; the overrides given win
over the file, the alias flags over both. Its ``--help`` says every default (``schema.HelpFormatter``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

import loaders  # noqa: F401  (registers the loaders)
from sdmp_fast import dist
from sdmp_fast.data.folders import DataError
from sdmp_fast.engine.precision import NonFiniteLoss
from sdmp_fast.engine.preempt import INTERRUPTED
from sdmp_fast.registry import MissingBackend
from sdmp_fast.schema import ConfigError, HelpFormatter, dump_yaml, section_classes, to_dict

OVERRIDE = re.compile(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*=")  # section.key=value


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets a config key: ``--data X`` = ``data.path=X``.

    Args:
        key: the dotted config key.
        help: said after "alias of KEY".
        switch: a flag without a value that sets ``KEY=true``.
    """
    key: str
    help: str = ""
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    nargs: str | None = None
    switch: bool = False


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that remembers which options take exactly one value (``parse`` must not move those)."""

    def __init__(self, *args, **kwargs):
        self.single_value: set[str] = set()  # before super().__init__, which adds -h through add_argument
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        if action.option_strings and action.nargs is None:
            self.single_value.update(action.option_strings)
        return action


def command_parser(prog: str, description: str, epilog: str | None = None) -> CommandParser:
    return CommandParser(prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter)


def config_default(config_cls: type, key: str) -> str:
    """The default of ``key`` in words, for an alias flag's help: an empty default is what its help says "empty =
    ..." means (e.g. "the pretraining run's data.path")."""
    section, name = key.split(".")
    f = {f.name: f for f in dataclasses.fields(section_classes(config_cls)[section])}[name]
    if f.default not in ("", ()):
        return ", ".join(map(str, f.default)) if isinstance(f.default, tuple) else str(f.default)
    said = re.search(r"empty = ([^;(]+)", f.metadata.get("help", ""))
    return said.group(1).strip().rstrip(".,") if said else "none"


def add_config_arguments(p: CommandParser, flags: dict[str, Flag], config_help: str, example: str,
                         config_cls: type, resume_help: str | None = None) -> None:
    """--config, the alias flags (each with the default of its key in ``config_cls``), --resume (with
    ``resume_help``) and --allow-config-change, --print-config and the overrides."""
    p.add_argument("--config", help=f"YAML file of overrides of the defaults{config_help}")
    for name, f in flags.items():
        said = f" (default: {config_default(config_cls, f.key)})".replace("%", "%%")
        if f.switch:
            p.add_argument(name, action="store_true", help=f"alias of {f.key}=true{f.help}{said}")
        else:
            p.add_argument(name, help=f"alias of {f.key}{f.help}{said}", metavar=f.metavar, type=f.type, nargs=f.nargs)
    if resume_help:
        p.add_argument("--resume", help=resume_help)
        p.add_argument("--allow-config-change", action="store_true",
                       help="with --resume: accept a change of a key that changes the run's mathematics or data order "
                            "(refused otherwise; the change is recorded in RUN_DIR/config_changes.jsonl)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help=f"config overrides, e.g. {example}")


def eval_flags(labelled: bool = False) -> dict[str, Flag]:
    """The alias flags of the evaluation commands (``labelled``: those that train on labels)."""
    flags = {"--data": Flag("data.path"), "--loader": Flag("data.loader", " (torch only)"),
             "--out": Flag("run.out_dir")}
    if labelled:
        flags["--label-fraction"] = Flag("data.label_fraction", ": train on F of the labels, per class (Table 3: "
                                         "0.1, 0.01)", metavar="F", type=float)
        flags["--label-subset"] = Flag("data.label_subset", ": the labelled training images, one per line (path "
                                       "relative to the train folder, or file name as in SimCLR's 1 %%/10 %% lists)",
                                       metavar="FILE")
    return flags


def add_pretrained_argument(p: CommandParser) -> None:
    p.add_argument("--pretrained", help="pretraining run directory (RUN_DIR/backbone.pt) or exported backbone file")


def _overrides_first(p: CommandParser, argv: list[str]) -> list[str]:
    """``argv`` with the ``section.key=value`` tokens moved to the front, so that a flag taking several values
    (``--ood-val DIR ...``) ends before an override; the value of a one-value flag stays where it is."""
    moved, rest, value_next = [], [], False
    for tok in argv:
        if not value_next and OVERRIDE.match(tok):
            moved.append(tok)
        else:
            rest.append(tok)
            value_next = not value_next and tok in p.single_value
    return moved + rest


def parse(p: CommandParser, flags: dict[str, Flag], argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """(arguments, overrides): the overrides given, then those of the alias flags that were set."""
    args = p.parse_intermixed_args(_overrides_first(p, sys.argv[1:] if argv is None else list(argv)))
    overrides = list(args.overrides)
    for name, f in flags.items():
        value = getattr(args, name.lstrip("-").replace("-", "_"))
        if f.switch and value:
            overrides.append(f"{f.key}=true")
        elif not f.switch and value is not None:
            overrides.append(f"{f.key}={value}")
    return args, overrides


def print_config(cfg) -> dict:
    """``--print-config``: the resolved config on stdout; returns ``{"config": ...}``."""
    print(dump_yaml(cfg), end="")
    return {"config": to_dict(cfg)}


def main(run: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Every command's ``main``: ``run(argv)``; bad input (config, data, a missing backend, a diverging loss) is one
    ``error:`` line on stderr and exit code 2. Ctrl-C is exit code 130: during training after the checkpoint
    (``engine/preempt.py``), elsewhere (start-up, evaluation) at once, with one line instead of a traceback."""
    try:
        result = run(argv)
    except (ConfigError, DataError, MissingBackend, NonFiniteLoss) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    if isinstance(result, dict) and result.get("preempted") == "SIGINT":
        return INTERRUPTED
    return 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device = {name!r} but CUDA is not available; use run.device=auto or cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # torchrun: one GPU per process
    return dev


def start_process(device_name: str, threads: int, distributed: bool = True) -> torch.device:
    """The start of every command: torch's CPU threads (0 = default), the device (under torchrun: LOCAL_RANK's
    GPU, set before NCCL starts) and, with ``distributed``, the process group from torchrun's environment."""
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL starts: one GPU per process (LOCAL_RANK)
    if distributed:
        dist.init_from_env(device)
    return device
