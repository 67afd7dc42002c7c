"""Weighted k-NN accuracy of an exported backbone, beside its random init (the report of pretraining's ``run.knn``).

    python -m sdmp_fast.knn --pretrained RUN_DIR_OR_EXPORT [--config FILE] [--data PATH] [--out DIR]
                            [--print-config] [section.key=value ...]

Evaluates an exported backbone (and its random-init twin, ``sdmp_fast/eval/pretrained.py``) with
``sdmp_fast/eval/knn.py`` on the pretraining run's data by default, writing ``config.yaml``, ``knn.json``
and a line of ``metrics.jsonl`` to ``run.out_dir`` (default ``RUN_DIR/knn``). Under torchrun rank 0
computes and writes; the others exit at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field

from sdmp_fast.cli import (CommandParser, add_config_arguments, add_pretrained_argument, command_parser, eval_flags,
                           main as cli_main, parse, print_config, start_process)
from sdmp_fast.data.splits import load_splits
from sdmp_fast.engine.precision import autocast_dtype
from sdmp_fast.engine.rundir import RunDir
from sdmp_fast.eval.config import EvalData, EvalRun, fill_data_defaults, validate_data, validate_run
from sdmp_fast.eval.knn import format_report, knn_report
from sdmp_fast.eval.pretrained import eval_out_dir, load_pretrained
from sdmp_fast.schema import FIXED, choices, load, need


@dataclass(frozen=True)
class KnnSection:
    k: int = field(default=20, metadata={"help": "neighbours of the weighted vote", **FIXED})
    bank: int = field(default=10000, metadata={"help": "train images in the feature bank (a fixed subset)", **FIXED})
    queries: int = field(default=0, metadata={"help": "val images used as queries; 0 = all", **FIXED})
    temperature: float = field(default=0.07, metadata={"help": "vote weight exp(similarity / temperature)", **FIXED})


@dataclass(frozen=True)
class KnnRun(EvalRun):
    precision: str = field(default="fp32", metadata={"help": "autocast dtype of the backbone (fp32: the numbers of pretraining's report)", **choices("auto", "fp32", "bf16", "fp16"), **FIXED})


@dataclass(frozen=True)
class KnnConfig:
    data: EvalData = EvalData()
    knn: KnnSection = KnnSection()
    run: KnnRun = KnnRun()


FLAGS = eval_flags()


def build_parser() -> CommandParser:
    p = command_parser("python -m sdmp_fast.knn", "Weighted k-NN accuracy of an exported backbone, beside its random init.")
    add_pretrained_argument(p)
    add_config_arguments(p, FLAGS, "", "knn.k=10", KnnConfig)
    return p


def validate(cfg: KnnConfig) -> None:
    validate_data(cfg.data)
    validate_run(cfg.run)
    need(cfg.knn.k >= 1 and cfg.knn.bank >= 1, "knn.k and knn.bank must be >= 1")
    need(cfg.knn.queries >= 0, f"knn.queries = {cfg.knn.queries}: must be >= 0 (0 = all)")
    need(cfg.knn.temperature > 0, f"knn.temperature = {cfg.knn.temperature}: must be > 0")


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, KnnConfig]:
    args, overrides = parse(build_parser(), FLAGS, argv)
    cfg = load(KnnConfig, args.config, overrides)
    validate(cfg)
    return args, cfg


def run(argv: list[str] | None = None) -> dict:
    """Parse, evaluate the trained and the random-init backbone, write the report; returns it."""
    args, cfg = parse_config(argv)
    pre = load_pretrained(args.pretrained)
    cfg = dataclasses.replace(cfg, data=fill_data_defaults(cfg.data, pre.config))
    if args.print_config:
        return print_config(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # under torchrun: rank 0 alone evaluates (no process group, so nobody waits on a long report)
    device = start_process(cfg.run.device, cfg.run.threads, distributed=False)
    out = RunDir(cfg.run.out_dir or eval_out_dir(pre, "knn"))
    train, val, data_name = load_splits(cfg.data)
    out.write_config(cfg, {"pretrained": str(pre.export_path), "random_init": pre.random_init_how,
                           "device": str(device)})
    print(f"[knn] {pre.description} on {data_name} ({len(train)} train images), device {device} -> {out.path}",
          file=sys.stderr)
    report = knn_report({"trained": pre.trained, "random_init": pre.random_init}, train, val, device,
                        image_size=cfg.data.image_size, interpolation=cfg.data.eval_interpolation,
                        mean=cfg.data.mean, std=cfg.data.std,
                        bank=cfg.knn.bank, queries=cfg.knn.queries, k=cfg.knn.k,
                        num_workers=cfg.data.num_workers, temperature=cfg.knn.temperature,
                        batch_size=cfg.data.batch_size, dtype=autocast_dtype(cfg.run.precision, device))
    report.update(pretrained=str(pre.export_path), random_init_how=pre.random_init_how, data=data_name)
    out.write_json("knn.json", report)
    out.log(report)
    print(format_report(report))
    return report


def main(argv: list[str] | None = None) -> int:
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
