"""End-to-end fine-tuning of a pretrained backbone with DeiT's recipe (docs/method.md, Evaluation; Table 2).

    python -m sdmp_fast.finetune --pretrained RUN_DIR_OR_EXPORT [--config configs/eval/finetune_deit.yaml]
                                 [--data PATH] [--out DIR] [--resume auto] [--print-config]
                                 [--label-fraction F | --label-subset FILE] [--ood-val DIR ...] [section.key=value ...]

The exported backbone is rebuilt from its recorded timm name and kwargs with ``drop_path_rate =
model.drop_path`` and a classifier head (``num_classes`` = the folder's classes), then its weights are
loaded (only the head is new). The recipe is DeiT's, from timm's components: AdamW (lr ``optim.lr`` x
batch / 512, wd 0.05 except on biases, norms, position embedding and class token), warm-up then cosine
per step (``timm.scheduler.CosineLRScheduler``, from ``optim.warmup_lr`` to ``optim.min_lr``), training
views of ``timm.data.create_transform`` (RandomResizedCrop, flip, RandAugment rand-m9-mstd0.5-inc1, random
erasing 0.25), Mixup 0.8 / CutMix 1.0 (``timm.data.Mixup``, label smoothing 0.1) with
``timm.loss.SoftTargetCrossEntropy``, drop-path 0.1. Not implemented: DeiT's repeated augmentation, its
model EMA and its 10 cool-down epochs. Validation uses the evaluation view of ``sdmp_fast.data.images.eval_spec``
(as the linear and k-NN evaluations).

Semi-supervised fine-tuning (Table 3, SimCLR's protocol): ``--label-fraction F`` trains on a seeded
class-balanced share of the training images (``data.label_seed``), ``--label-subset FILE`` on the images a
file lists (SimCLR's 1 % / 10 % lists of file names, or paths relative to the train folder); validation
uses the whole val split. ``--ood-val DIR`` (Table 4) evaluates the fine-tuned arms at the end on each
ImageNet-A / ImageNet-R style folder (``DIR/<wnid>/*``, e.g. 200 classes): the logits are restricted to
the training classes of the same names, and a class folder that is no training class is an error.
ImageNet-C (1000 classes in corruption / severity folders) is not read by this option.

The same architecture from its random initialisation (``sdmp_fast/eval/pretrained.py``) is fine-tuned side by
side on the same batches and reported beside it (``run.random_init=false`` skips it and halves the cost).
Outputs (rank 0) in ``run.out_dir`` (default ``RUN_DIR/finetune``): ``config.yaml``, ``metrics.jsonl``,
``checkpoints/`` (every epoch end and at the end; ``--resume auto``) and ``finetune.json``. Under torchrun
the arms are DDP-wrapped and the global batch ``data.batch_size`` is split over the ranks.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from sdmp_fast import dist
from sdmp_fast.cli import (CommandParser, Flag, add_config_arguments, add_pretrained_argument, command_parser,
                           eval_flags, main as cli_main, parse, print_config, start_process)
from sdmp_fast.engine.rundir import RunDir
from sdmp_fast.eval.config import fill_data_defaults
from sdmp_fast.eval.finetune import FinetuneConfig, format_result, validate
from sdmp_fast.eval.finetune_trainer import FinetuneTrainer
from sdmp_fast.eval.pretrained import eval_out_dir, load_pretrained
from sdmp_fast.schema import load

FLAGS = {**eval_flags(labelled=True),
         "--ood-val": Flag("data.ood_val", ": ImageNet-A / -R style folders evaluated at the end (Table 4)",
                           metavar="DIR", nargs="+")}


def build_parser() -> CommandParser:
    p = command_parser("python -m sdmp_fast.finetune", __doc__.split("\n\n")[2],
                       epilog="the paper's recipe: configs/eval/finetune_deit.yaml")
    add_pretrained_argument(p)
    add_config_arguments(p, FLAGS, " (configs/eval/finetune_deit.yaml)", "run.epochs=100", FinetuneConfig,
                         resume_help="checkpoint file, or 'auto' for the newest valid one in the output directory")
    return p


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, FinetuneConfig]:
    args, overrides = parse(build_parser(), FLAGS, argv)
    cfg = load(FinetuneConfig, args.config, overrides)
    validate(cfg)
    return args, cfg


def run(argv: list[str] | None = None, progress: bool = True) -> dict:
    """Parse, fine-tune (trained and random-init arms) and evaluate; returns the result dict."""
    args, cfg = parse_config(argv)
    pre = load_pretrained(args.pretrained)
    cfg = dataclasses.replace(cfg, data=fill_data_defaults(cfg.data, pre.config))
    if args.print_config:
        return print_config(cfg)
    device = start_process(cfg.run.device, cfg.run.threads)
    out = RunDir.open(cfg.run.out_dir, args.resume, default=eval_out_dir(pre, "finetune"))
    trainer = FinetuneTrainer(cfg, pre, out, device)
    cfg = trainer.cfg  # data.batch_size clipped to a small training set
    state = out.load_resume(cfg, args.allow_config_change)
    if state is not None:
        trainer.resume(state)
        done = out.finished("step", trainer.step, trainer.total, "finetune.json", "finetune")
        if done is not None:
            dist.shutdown()
            return done
        out.announce_resume("step", trainer.step)
    out.write_config(cfg, trainer.resolved())
    if dist.is_main():
        print(trainer.describe(), file=sys.stderr)
    if trainer.fit(progress) < trainer.total:
        out.report_stop("finetune", f"step {trainer.step} of {trainer.total}", "run.stop_after")
        dist.shutdown()
        return {**trainer.record(), "stopped_early": True}
    result = trainer.result()
    if dist.is_main():
        out.write_json("finetune.json", result)
        print(format_result(result))
    dist.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
