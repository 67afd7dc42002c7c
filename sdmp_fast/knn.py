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
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sdmp_fast.datasets import DataError, Split
from sdmp_fast.engine.trainer import autocast_context
from sdmp_fast.eval_config import (EvalData, EvalRun, _choices, add_common_arguments, dump_yaml, fill_data_defaults,
                                   parse_command_line, need, to_dict, validate_data, validate_run)


@torch.no_grad()
def extract_features(backbone: nn.Module, batches: Iterable, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` in eval mode over (images, labels) batches; returns (features [N, D] normalised, labels [N])."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for x, y in batches:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
            f = backbone(x)
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(torch.as_tensor(y).to(device))
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_classify(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                 k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores ``[Q, num_classes]`` of the weighted k-NN vote (features already normalised)."""
    k = min(k, bank.shape[0])
    out = []
    for q in queries.split(chunk):
        sim = q @ bank.T  # [q, N]
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    ks = tuple(k for k in ks if k <= scores.shape[1])
    pred = scores.topk(max(ks), dim=1).indices
    hit = pred == labels[:, None]
    return {f"top{k}": 100.0 * float(hit[:, :k].any(1).float().mean()) for k in ks}


def knn_accuracy(backbone: nn.Module, bank_batches: Iterable, query_batches: Iterable, num_classes: int,
                 device: torch.device, k: int = 20, temperature: float = 0.07,
                 dtype: torch.dtype = torch.float32) -> dict[str, float]:
    bank, bank_labels = extract_features(backbone, bank_batches, device, dtype)
    queries, query_labels = extract_features(backbone, query_batches, device, dtype)
    scores = knn_classify(bank, bank_labels, queries, num_classes, k=k, temperature=temperature)
    return topk_accuracy(scores, query_labels)


def knn_report(models: dict[str, nn.Module], train: Split, val: Split | None, device: torch.device, *,
               image_size: int, mean, std, bank: int, queries: int, k: int, num_workers: int,
               temperature: float = 0.07, batch_size: int = 256, dtype: torch.dtype = torch.float32) -> dict:
    """k-NN accuracy of each model (``{"trained": ..., "random_init": ...}``) on one fixed bank and query set.

    The bank is a fixed subset of ``bank`` train images (seed 0: comparable across runs and seeds); the
    queries are the first ``queries`` (0 = all) val images, or disjoint held-out train images without a val split.
    """
    from loaders.torch_folder import eval_batches
    from sdmp_fast.views import eval_spec
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(train), generator=g).tolist()
    bank_idx = sorted(perm[:bank])
    if val is not None:
        query_split = val
        n = len(val) if queries == 0 else min(queries, len(val))
        query_idx = list(range(n))
        query_name = f"{val.root.name} split"
    else:  # no val split: disjoint held-out train images
        query_split = train
        rest = perm[bank:]
        query_idx = sorted(rest[:queries or 10000])
        query_name = "held-out train images (no val split)"
    if not query_idx:
        raise DataError("k-NN: no query images left; lower the bank size (run.knn_bank / knn.bank) or add a val split")
    spec = eval_spec(image_size)
    out = {"k": k, "bank": len(bank_idx), "queries": len(query_idx), "query_set": query_name}
    for name, model in models.items():
        model = model.to(device)
        bank_batches = eval_batches(train, bank_idx, spec, mean, std, batch_size, num_workers)
        query_batches = eval_batches(query_split, query_idx, spec, mean, std, batch_size, num_workers)
        out[name] = knn_accuracy(model, bank_batches, query_batches, len(train.classes), device, k=k,
                                 temperature=temperature, dtype=dtype)
    return out


def format_report(knn: dict) -> str:
    return (f"k-NN (k={knn['k']}, bank {knn['bank']} train images, {knn['queries']} {knn['query_set']}):\n"
            f"  trained      top-1 {knn['trained']['top1']:6.2f}  top-5 {knn['trained'].get('top5', float('nan')):6.2f}\n"
            f"  random init  top-1 {knn['random_init']['top1']:6.2f}  top-5 {knn['random_init'].get('top5', float('nan')):6.2f}")


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
    from sdmp_fast.engine.trainer import autocast_dtype
    from sdmp_fast.pretrain import start_process
    from sdmp_fast.pretrained import default_out_dir, load_eval_splits, load_pretrained
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
    from sdmp_fast.eval_config import cli_main
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
