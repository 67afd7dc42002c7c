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
import sys
from pathlib import Path

import torch

import loaders
from sdmp_fast import dist
from sdmp_fast.cli import (CommandParser, Flag, add_config_arguments, command_parser, main as cli_main, parse,
                           print_config, start_process)
from sdmp_fast.config import ALIASES, Config, ConfigError, load_config, resolve, to_dict
from sdmp_fast.data.folders import Split
from sdmp_fast.data.splits import load_splits
from sdmp_fast.engine.profile_input import profile_input, steps_argument
from sdmp_fast.engine.rundir import RunDir
from sdmp_fast.engine.telemetry import Board, knn_scalars, wait_phrase
from sdmp_fast.engine.trainer import FitResult, Trainer
from sdmp_fast.eval.knn import format_report, knn_report
from sdmp_fast.export import export_backbone
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.models import build_backbone
from sdmp_fast.models.common import adopt_frozen, check_backbone
from sdmp_fast.registry import BACKBONES, LOADERS, METHODS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
FLAGS = {flag: Flag(key, ": an ImageNet-style folder" if flag == "--data" else "") for flag, key in ALIASES.items()}


def _listing() -> str:
    lines = ["shipped configs (--config):"]
    lines += [f"  configs/{p.name}" for p in sorted(CONFIG_DIR.glob("*.yaml"))] or ["  (none found)"]
    for title, reg in (("loaders (--loader / data.loader)", LOADERS), ("methods (method.name)", METHODS),
                       ("backbones (model.backbone)", BACKBONES)):
        lines.append(f"{title}:")
        lines += [f"  {n:<14} {h}" for n, h in reg.describe()]
    lines.append("every key: docs/config.md, or --print-config to see the resolved values")
    return "\n".join(lines)


def build_parser() -> CommandParser:
    p = command_parser("python -m sdmp_fast.pretrain", "Self-supervised pretraining (MoCo v3 / DINO, with or without "
                       "SDMP).", epilog=_listing())
    add_config_arguments(p, FLAGS, " (see configs/)", "optim.lr=1e-3", Config,
                         resume_help="checkpoint file, or 'auto' for the newest valid one in run.out_dir")
    p.add_argument("--dump-views", type=int, default=0, metavar="N",
                   help="write RUN_DIR/views.png: the views of one SDMP step for N samples, with lambda_eff "
                        "(MoCo v3: a, b, b_mix, a_mix; DINO: globals, the teacher's mixed global, clean and mixed locals)")
    p.add_argument("--profile-input", type=steps_argument, nargs="?", const=20, default=0, metavar="N",
                   help="measure instead of training: N steps (default 20) of this job with synthetic views (compute "
                        "ceiling), with the loader alone (input ceiling) and both (real rate); prints a table and a "
                        "verdict, writes RUN_DIR/profile_input.json (engine/profile_input.py)")
    return p


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    args, overrides = parse(build_parser(), FLAGS, argv)
    cfg = load_config(args.config, overrides)
    loaders.check_config(cfg)
    if cfg.method.name not in METHODS:
        raise ConfigError(f"method.name = {cfg.method.name!r}: choose one of {', '.join(METHODS.names())}")
    check_backbone(cfg)
    return args, cfg


def read_data(cfg: Config) -> tuple[Split | None, Split | None, str]:
    """The training and validation splits when a folder is read (for the loader, or for the k-NN report beside a
    .beton), and the name of the data."""
    if not loaders.info(cfg.data.loader).reads:
        return None, None, cfg.data.loader  # the loader makes its own data
    train = val = None
    name = f"shards in {cfg.data.path}"
    if cfg.data.format == "folder" and (not cfg.data.beton or cfg.run.knn):
        train, val, name = load_splits(cfg.data)
    if cfg.data.beton:
        name = cfg.data.beton + (f" (k-NN on {name})" if train is not None else "")
    return train, val, name


def skipped_images(*splits: Split | None) -> dict[str, int]:
    """The files data.skip_corrupt left out, per split read ({} when no folder is read)."""
    return {s.root.name: len(s.skipped) for s in splits if s is not None}


def dump_views(cfg: Config, count: int, method, loader, device: torch.device, out: RunDir) -> None:
    """``--dump-views N``: RUN_DIR/views.png, the views of the first SDMP step."""
    if not cfg.sdmp.enabled:
        raise ConfigError("--dump-views shows SDMP's mixed views: enable sdmp (sdmp.enabled=true)")
    from sdmp_fast.streams import StepRandom
    from sdmp_fast.view_grid import dump_sdmp_views
    loader.set_epoch(0)
    first = next(iter(loader))
    path = dump_sdmp_views(method, first, StepRandom.create(cfg.run.seed + 1, dist.get_rank(), device), cfg.data.mean,
                           cfg.data.std, out.path / "views.png", count)
    print(f"[run] wrote {path}", file=sys.stderr)


def run(argv: list[str] | None = None, progress: bool = True) -> dict:
    """Parse, train, export and evaluate; returns a summary dict (raises on bad input)."""
    args, cfg = parse_config(argv)
    if args.print_config:
        return print_config(cfg)
    device = start_process(cfg.run.device, cfg.run.threads)
    rank, world = dist.get_rank(), dist.get_world()
    if args.profile_input:  # writes its JSON only: it may point at a folder that holds a run
        out, state = RunDir(cfg.run.out_dir or "runs/profile_input"), None
    else:
        out = RunDir.open(cfg.run.out_dir, args.resume, tag=cfg.method.name + ("_sdmp" if cfg.sdmp.enabled else ""))
        state = out.load_resume(cfg, args.allow_config_change)  # refuses a changed FIXED key before anything is built

    torch.manual_seed(cfg.run.seed)  # identical initialisation on every rank
    train_split, val_split, data_name = read_data(cfg)
    recipe = method_recipe(cfg)
    backbone = build_backbone(cfg)
    random_init = copy.deepcopy(backbone)
    method = build_method(cfg, backbone).to(device)
    if cfg.model.channels_last:
        method = method.to(memory_format=torch.channels_last)
    kwargs = {"split": train_split} if train_split is not None else {}
    loader = LOADERS.build(cfg.data.loader, cfg, recipe, rank=rank, world=world, device=device, **kwargs)
    res = resolve(cfg, loader.num_samples, world, rank)
    if args.profile_input:
        report = profile_input(cfg, res, method, loader, recipe, device, out.path, args.profile_input, train_split)
        dist.shutdown()
        return report
    done = state and out.finished("step", int(state["step"]), res.total_steps, "summary.json", "run")
    if done:  # a complete run: its record stays as it is
        dist.shutdown()
        return done
    out.write_config(cfg, {**res.__dict__, "device": str(device), "data": data_name, "views": list(recipe.sizes)})
    if dist.is_main():
        print(f"[run] {out.path}: {cfg.method.name}{' + SDMP (' + cfg.sdmp.variant + ')' if cfg.sdmp.enabled else ''}, "
              f"{cfg.model.backbone} on {data_name} ({loader.num_samples} images, loader {cfg.data.loader}), "
              f"{res.total_steps} steps x {cfg.data.batch_size} images, device {device}, world {world}", file=sys.stderr)

    trainer = Trainer(cfg, res, method, loader, device, out)
    if args.dump_views and dist.is_main():
        dump_views(cfg, args.dump_views, method, loader, device, out)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except ValueError as e:  # what --allow-config-change cannot bridge: another architecture
            raise ConfigError(f"{out.resume}: {e}") from None
        adopt_frozen(random_init, method.export_backbone().state_dict())  # the k-NN baseline: the run's own step 0
        out.announce_resume("step", trainer.step)
    result = trainer.fit(progress=progress)
    summary = {"out_dir": str(out.path), "steps": trainer.step, "total_steps": res.total_steps,
               "seconds": round(result.seconds, 1), "images_per_s": round(result.images_per_s, 1),
               "last": result.last_logs, "skipped_images": skipped_images(train_split, val_split),
               "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None,
               "data_wait": result.data_wait}
    if result.stopped_early:
        why = ("interrupted (Ctrl-C)" if result.preempted == "SIGINT" else
               f"preempted by {result.preempted}" if result.preempted else "run.stop_after")
        out.report_stop("run", f"step {trainer.step} of {res.total_steps}", why,
                        checkpoint=str(trainer.last_checkpoint or "written by rank 0"))
        summary["preempted"] = result.preempted
    elif dist.is_main():
        finish(cfg, out, method, random_init, train_split, val_split, device, result, summary)
    dist.shutdown()
    return summary


def finish(cfg: Config, out: RunDir, method, random_init: torch.nn.Module, train: Split | None, val: Split | None,
           device: torch.device, result: FitResult, summary: dict) -> None:
    """Rank 0 at the end of training: backbone.pt, the k-NN report (trained vs random init), summary.json."""
    summary["export"] = str(export_backbone(method.export_backbone(), out.path / "backbone.pt",
                                            extra={"method": cfg.method.name, "sdmp": cfg.sdmp.enabled,
                                                   "config": to_dict(cfg)}))
    if cfg.run.knn and train is None:
        summary["knn_skipped"] = f"loader {cfg.data.loader} reads no image folder"
        print(f"[run] no k-NN report (run.knn): loader {cfg.data.loader} reads no image folder, which the report "
              "needs (--data DIR with train/ and val/); run.knn=false silences this", file=sys.stderr)
    elif cfg.run.knn:
        knn = knn_report({"trained": copy.deepcopy(method.export_backbone()), "random_init": random_init}, train, val,
                         device, image_size=cfg.data.image_size, interpolation=cfg.data.eval_interpolation,
                         mean=cfg.data.mean, std=cfg.data.std,
                         bank=cfg.run.knn_bank, queries=cfg.run.knn_queries, k=cfg.run.knn_k,
                         num_workers=cfg.data.num_workers)
        summary["knn"] = knn
        out.write_json("knn.json", knn)
        board = Board(out.path, cfg.run.tensorboard)
        board.write({"step": summary["steps"], **knn_scalars(knn)})
        board.close()
        print(format_report(knn))
    print(f"[run] done: {summary['steps']} steps in {result.seconds:.0f} s ({result.images_per_s:.0f} images/s), "
          f"{wait_phrase(result.data_wait, cfg)}; backbone exported to {summary['export']}", file=sys.stderr)
    out.write_json("summary.json", summary)


def main(argv: list[str] | None = None) -> int:
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
