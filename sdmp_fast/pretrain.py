"""Pretraining entry point (the composition root).

    python -m sdmp_fast.pretrain [--config configs/X.yaml] [--loader NAME] [--data PATH] [--resume PATH|auto]
                                 [--print-config] [section.key=value ...]

With no arguments it trains the embedded default: MoCo v3 + SDMP, tiny ViT, Fashion-MNIST at 32 px,
and ends by printing k-NN accuracy of the trained backbone beside the same backbone at random init.
Under ``torchrun --nproc_per_node N -m sdmp_fast.pretrain ...`` every process trains one rank (DDP;
NCCL on GPUs, gloo on CPU); rank 0 alone writes the run directory and runs the k-NN report.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import loaders  # noqa: F401  (registers the loaders)
from sdmp_fast import dist
from sdmp_fast.config import ALIASES, Config, ConfigError, dump_yaml, load_config, resolve, to_dict
from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.data.splits import load_splits as load_data_splits
from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.engine.precision import NonFiniteLoss
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.export import export_backbone
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.models import build_backbone
from sdmp_fast.registry import BACKBONES, LOADERS, METHODS, MissingBackend
from sdmp_fast.cli import start_process

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
FOLDERLESS_LOADERS = {"synthetic"}


def _listing() -> str:
    lines = ["shipped configs (--config):"]
    lines += [f"  configs/{p.name}" for p in sorted(CONFIG_DIR.glob("*.yaml"))] or ["  (none found)"]
    for title, reg in (("loaders (--loader / data.loader)", LOADERS), ("methods (method.name)", METHODS),
                       ("backbones (model.backbone)", BACKBONES)):
        lines.append(f"{title}:")
        lines += [f"  {n:<14} {h}" for n, h in reg.describe()]
    lines.append("every key: docs/config.md, or --print-config to see the resolved values")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sdmp_fast.pretrain", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Self-supervised pretraining (MoCo v3 / DINO, with or without SDMP).",
        epilog=_listing())
    p.add_argument("--config", help="YAML file of overrides of the defaults (see configs/)")
    p.add_argument("--loader", help=f"alias of {ALIASES['--loader']}")
    p.add_argument("--data", help=f"alias of {ALIASES['--data']}: an ImageNet-style folder")
    p.add_argument("--out", help=f"alias of {ALIASES['--out']}")
    p.add_argument("--resume", help="checkpoint file, or 'auto' for the newest valid one in run.out_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--dump-views", type=int, default=0, metavar="N",
                   help="write RUN_DIR/views.png: the views of one SDMP step for N samples, with lambda_eff "
                        "(MoCo v3: a, b, b_mix, a_mix; DINO: globals, the teacher's mixed global, clean and mixed locals)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. optim.lr=1e-3")
    return p


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in ALIASES.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(args.config, overrides)
    for key, reg, value in (("data.loader", LOADERS, cfg.data.loader), ("method.name", METHODS, cfg.method.name),
                            ("model.backbone", BACKBONES, cfg.model.backbone)):
        if value not in reg:
            raise ConfigError(f"{key} = {value!r}: choose one of {', '.join(reg.names())}")
    return args, cfg


def default_out_dir(cfg: Config) -> Path:
    tag = cfg.method.name + ("_sdmp" if cfg.sdmp.enabled else "")
    return Path("runs") / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_splits(cfg: Config) -> tuple[Split, Split | None, str]:
    """The run's training and validation splits (``datasets.load_splits``: materialised by rank 0 first,
    restricted to ``data.class_subset``, verified once)."""
    return load_data_splits(cfg.data, progress=dist.is_main())


def run_knn(cfg: Config, trained: torch.nn.Module, random_init: torch.nn.Module, train: Split, val: Split | None,
            device: torch.device) -> dict:
    """k-NN accuracy of the trained backbone and of the same architecture at random init (``eval.knn.knn_report``)."""
    from sdmp_fast.eval.knn import knn_report
    return knn_report({"trained": trained, "random_init": random_init}, train, val, device,
                      image_size=cfg.data.image_size, mean=cfg.data.mean, std=cfg.data.std, bank=cfg.run.knn_bank,
                      queries=cfg.run.knn_queries, k=cfg.run.knn_k, num_workers=cfg.data.num_workers)


def run(argv: list[str] | None = None, progress: bool = True) -> dict:
    """Parse, train, export and evaluate; returns a summary dict (raises on bad input)."""
    args, cfg = parse_config(argv)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return {"config": to_dict(cfg)}
    device = start_process(cfg.run.device, cfg.run.threads)
    rank, world = dist.get_rank(), dist.get_world()

    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else dist.broadcast_object(default_out_dir(cfg))
    resume_path = None
    if args.resume:
        resume_path = ckpt.latest_checkpoint(out_dir) if args.resume == "auto" else Path(args.resume)
        if args.resume == "auto" and resume_path is None:
            if not cfg.run.out_dir:
                raise ConfigError("--resume auto needs run.out_dir (or --out) naming the run to continue")
            print(f"[resume] no valid checkpoint in {out_dir}: starting from scratch", file=sys.stderr)
        elif resume_path is not None and not resume_path.is_file():
            raise ConfigError(f"--resume {args.resume}: no such checkpoint file")
    elif ckpt.list_checkpoints(out_dir):
        raise ConfigError(f"run.out_dir {str(out_dir)!r} already holds checkpoints; continue it with --resume auto, "
                          "or choose another run.out_dir (nothing was overwritten)")

    torch.manual_seed(cfg.run.seed)  # identical initialisation on every rank
    train_split = val_split = None
    data_name = "synthetic" if cfg.data.loader in FOLDERLESS_LOADERS else f"shards in {cfg.data.path}"
    if (cfg.data.loader not in FOLDERLESS_LOADERS and cfg.data.format == "folder"
            and (not cfg.data.beton or cfg.run.knn)):  # with a .beton, the folder only serves the k-NN report
        train_split, val_split, data_name = load_splits(cfg)
    if cfg.data.beton:
        data_name = cfg.data.beton + (f" (k-NN on {data_name})" if train_split is not None else "")
    recipe = method_recipe(cfg)
    backbone = build_backbone(cfg)
    random_init = copy.deepcopy(backbone)
    method = build_method(cfg, backbone).to(device)
    if cfg.model.channels_last:
        method = method.to(memory_format=torch.channels_last)
    kwargs = {"split": train_split} if train_split is not None else {}
    loader = LOADERS.build(cfg.data.loader, cfg, recipe, rank=rank, world=world, device=device, **kwargs)
    res = resolve(cfg, loader.num_samples, world, rank)

    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = {"resolved": {**res.__dict__, "device": str(device), "data": data_name, "views": list(recipe.sizes)}}
        (out_dir / "config.yaml").write_text(dump_yaml(cfg) + "\n" + json.dumps(resolved) + "\n")
        print(f"[run] {out_dir}: {cfg.method.name}{' + SDMP (' + cfg.sdmp.variant + ')' if cfg.sdmp.enabled else ''}, "
              f"{cfg.model.backbone} on {data_name} ({loader.num_samples} images, loader {cfg.data.loader}), "
              f"{res.total_steps} steps x {cfg.data.batch_size} images, device {device}, world {world}", file=sys.stderr)

    trainer = Trainer(cfg, res, method, loader, device, out_dir)
    if args.dump_views and dist.is_main():
        if not cfg.sdmp.enabled:
            raise ConfigError("--dump-views shows SDMP's mixed views: enable sdmp (sdmp.enabled=true)")
        from sdmp_fast.streams import StepRandom
        from sdmp_fast.view_grid import dump_sdmp_views
        loader.set_epoch(0)
        first = next(iter(loader))
        path = dump_sdmp_views(method, first, StepRandom.create(cfg.run.seed + 1, rank, device), cfg.data.mean,
                               cfg.data.std, out_dir / "views.png", args.dump_views)
        print(f"[run] wrote {path}", file=sys.stderr)
    if resume_path is not None:
        trainer.load_state_dict(ckpt.load(resume_path))
        if dist.is_main():
            print(f"[resume] {resume_path} at step {trainer.step}", file=sys.stderr)
    result = trainer.fit(progress=progress)
    summary = {"out_dir": str(out_dir), "steps": trainer.step, "total_steps": res.total_steps,
               "seconds": round(result.seconds, 1), "images_per_s": round(result.images_per_s, 1),
               "last": result.last_logs, "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None}
    if result.stopped_early:
        if dist.is_main():
            why = f"preempted by {result.preempted}" if result.preempted else "run.stop_after"
            print(f"[run] stopped after step {trainer.step} of {res.total_steps} ({why}); checkpoint "
                  f"{trainer.last_checkpoint or 'written by rank 0'}; continue with --resume auto --out {out_dir}",
                  file=sys.stderr)
        summary["preempted"] = result.preempted
        dist.shutdown()
        return summary
    if dist.is_main():
        summary["export"] = str(export_backbone(method.export_backbone(), out_dir / "backbone.pt",
                                                extra={"method": cfg.method.name, "sdmp": cfg.sdmp.enabled,
                                                       "config": to_dict(cfg)}))
        if cfg.run.knn and train_split is not None:
            knn = run_knn(cfg, copy.deepcopy(method.export_backbone()), random_init, train_split, val_split, device)
            summary["knn"] = knn
            (out_dir / "knn.json").write_text(json.dumps(knn, indent=1))
            print(f"k-NN (k={knn['k']}, bank {knn['bank']} train images, {knn['queries']} {knn['query_set']}):\n"
                  f"  trained      top-1 {knn['trained']['top1']:6.2f}  top-5 {knn['trained'].get('top5', float('nan')):6.2f}\n"
                  f"  random init  top-1 {knn['random_init']['top1']:6.2f}  top-5 {knn['random_init'].get('top5', float('nan')):6.2f}")
        print(f"[run] done: {trainer.step} steps in {result.seconds:.0f} s ({result.images_per_s:.0f} images/s); "
              f"backbone exported to {summary['export']}", file=sys.stderr)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    dist.shutdown()
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (ConfigError, DataError, MissingBackend, NonFiniteLoss) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
