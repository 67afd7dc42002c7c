"""Weighted k-NN evaluation of frozen features (DINO's monitor: k = 20, cosine, weights exp(sim / 0.07)).

Features are L2-normalised; each query's k most similar bank entries vote for their class with weight
``exp(sim / T)``; top-1 and top-5 follow from the summed votes. The trained backbone is always
reported beside the same architecture at random initialisation, so learning is visible.

``knn_report`` is the report of pretraining (``run.knn``) and of the command

    python -m sdmp_fast.knn --pretrained RUN_DIR_OR_EXPORT [--config FILE] [--data PATH] [--out DIR]
                            [--print-config] [section.key=value ...]

which evaluates an exported backbone (and its random-init twin, ``sdmp_fast/pretrained.py``) on the
pretraining run's data by default, writing ``config.yaml``, ``knn.json`` and a line of ``metrics.jsonl``
to ``run.out_dir`` (default ``RUN_DIR/knn``). Under torchrun rank 0 computes and writes; the others exit at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


from sdmp_fast.eval.config import (EvalData, EvalRun, _choices, add_common_arguments, dump_yaml, fill_data_defaults,
                                   parse_command_line, need, to_dict, validate_data, validate_run)
from sdmp_fast.eval.knn import format_report, knn_report


# ----------------------------------------------------------------------------- command

@dataclass(frozen=True)
class KnnSection:
    k: int = field(default=20, metadata={"help": "neighbours of the weighted vote"})
    bank: int = field(default=10000, metadata={"help": "train images in the feature bank (a fixed subset)"})
    queries: int = field(default=0, metadata={"help": "val images used as queries; 0 = all"})
    temperature: float = field(default=0.07, metadata={"help": "vote weight exp(similarity / temperature)"})


@dataclass(frozen=True)
class KnnRun(EvalRun):
    precision: str = field(default="fp32", metadata={"help": "autocast dtype of the backbone (fp32: the numbers of pretraining's report)", **_choices("auto", "fp32", "bf16", "fp16")})


@dataclass(frozen=True)
class KnnConfig:
    data: EvalData = EvalData()
    knn: KnnSection = KnnSection()
    run: KnnRun = KnnRun()


ALIASES = {"--data": "data.path", "--loader": "data.loader", "--out": "run.out_dir"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdmp_fast.knn",
                                description="Weighted k-NN accuracy of an exported backbone, beside its random init.")
    add_common_arguments(p, ALIASES, "", "knn.k=10", resume=False)
    return p


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, KnnConfig]:
    args, cfg = parse_command_line(build_parser(), KnnConfig, ALIASES, argv)
    validate_data(cfg.data)
    validate_run(cfg.run)
    need(cfg.knn.k >= 1 and cfg.knn.bank >= 1, "knn.k and knn.bank must be >= 1")
    need(cfg.knn.queries >= 0, f"knn.queries = {cfg.knn.queries}: must be >= 0 (0 = all)")
    need(cfg.knn.temperature > 0, f"knn.temperature = {cfg.knn.temperature}: must be > 0")
    return args, cfg


def run(argv: list[str] | None = None) -> dict:
    """Parse, evaluate the trained and the random-init backbone, write the report; returns it."""
    from sdmp_fast.engine.precision import autocast_dtype
    from sdmp_fast.cli import start_process
    from sdmp_fast.eval.pretrained import default_out_dir, load_eval_splits, load_pretrained
    args, cfg = parse_config(argv)
    pre = load_pretrained(args.pretrained)
    cfg = dataclasses.replace(cfg, data=fill_data_defaults(cfg.data, pre.config))
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return {"config": to_dict(cfg)}
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # under torchrun: rank 0 alone evaluates (no process group, so nobody waits on a long report)
    device = start_process(cfg.run.device, cfg.run.threads, distributed=False)
    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else default_out_dir(pre, "knn")
    train, val, data_name = load_eval_splits(cfg.data)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_yaml(cfg) + "\n" + json.dumps(
        {"resolved": {"pretrained": str(pre.export_path), "random_init": pre.random_init_how,
                      "device": str(device)}}) + "\n")
    print(f"[knn] {pre.description} on {data_name} ({len(train)} train images), device {device} -> {out_dir}",
          file=sys.stderr)
    report = knn_report({"trained": pre.trained, "random_init": pre.random_init}, train, val, device,
                        image_size=cfg.data.image_size, mean=cfg.data.mean, std=cfg.data.std,
                        bank=cfg.knn.bank, queries=cfg.knn.queries, k=cfg.knn.k,
                        num_workers=cfg.data.num_workers, temperature=cfg.knn.temperature,
                        batch_size=cfg.data.batch_size, dtype=autocast_dtype(cfg.run.precision, device))
    report.update(pretrained=str(pre.export_path), random_init_how=pre.random_init_how, data=data_name)
    (out_dir / "knn.json").write_text(json.dumps(report, indent=1))
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(report) + "\n")
    print(format_report(report))
    return report


def main(argv: list[str] | None = None) -> int:
    from sdmp_fast.eval.config import cli_main
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
