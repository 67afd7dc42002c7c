"""Linear evaluation of a frozen pretrained backbone (docs/method.md, Evaluation; Table 1 of the paper).

    python -m sdmp_fast.linear --pretrained RUN_DIR_OR_EXPORT [--protocol mocov3|dino] [--cached-features]
                               [--config configs/eval/linear_mocov3.yaml] [--data PATH] [--out DIR] [--resume auto]
                               [--print-config] [section.key=value ...]

A linear classifier on frozen features (``sdmp_fast/eval/probe.py``): MoCo v3's protocol (last-layer class
token; SGD momentum 0.9, wd 0, lr 3 x batch/256 for ViTs, 90 epochs, cosine) or DINO's (class tokens of
the last 4 blocks concatenated; lr 0.001 x batch/256, 100 epochs). Training views: RandomResizedCrop
(``data.crop_scale``) + horizontal flip, decoded and cut per sample with the randomness of sample i in
epoch e drawn from (seed, e, i); validation: the evaluation view of ``sdmp_fast.data.images.eval_spec``
(resize 256 / centre crop 224 scaled to ``data.image_size``). The backbone is frozen and deterministic in
eval mode, so the validation features are computed once.

``--cached-features`` is a fast mode, **not the paper protocol**: the training features too are
computed once from the evaluation view (no augmentation) and the heads train for many epochs on them.

The same architecture at random initialisation (``sdmp_fast/eval/pretrained.py``) gets its own head,
trained side by side on the same batches, and is reported beside the trained backbone. Outputs
(rank 0) in ``run.out_dir`` (default ``RUN_DIR/linear/<protocol>[_cached]``): ``config.yaml``,
``metrics.jsonl`` (one line per epoch), ``checkpoints/`` (every epoch; ``--resume auto``) and
``linear.json``. Under torchrun the heads are DDP-wrapped, each rank computes the features of its
share of the images, and the global batch ``data.batch_size`` is split over the ranks.
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
from sdmp_fast.eval.linear import (FAST_MODE, LinearConfig, LinearProbe, check_probe, fill_protocol_defaults,
                                   format_result, output_name, validate)
from sdmp_fast.eval.pretrained import eval_out_dir, is_vit, load_pretrained
from sdmp_fast.eval.probe import PROTOCOLS
from sdmp_fast.schema import load

FLAGS = {"--protocol": Flag("probe.protocol", f": {' or '.join(PROTOCOLS)}"),
         "--cached-features": Flag("probe.cached_features", f": {FAST_MODE}", switch=True),
         **eval_flags(labelled=True)}


def build_parser() -> CommandParser:
    p = command_parser("python -m sdmp_fast.linear", __doc__.split("\n\n")[2],
                       epilog="paper protocols: configs/eval/linear_mocov3.yaml, configs/eval/linear_dino.yaml")
    add_pretrained_argument(p)
    add_config_arguments(p, FLAGS, " (configs/eval/linear_*.yaml)", "run.epochs=10", LinearConfig,
                         resume_help="checkpoint file, or 'auto' for the newest valid one in the output directory")
    return p


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, LinearConfig]:
    args, overrides = parse(build_parser(), FLAGS, argv)
    cfg = load(LinearConfig, args.config, overrides)
    validate(cfg)
    return args, cfg


def run(argv: list[str] | None = None, progress: bool = True) -> dict:
    """Parse, train the linear heads (trained and random-init backbone) and evaluate; returns the result dict."""
    args, cfg = parse_config(argv)
    pre = load_pretrained(args.pretrained)
    cfg = fill_protocol_defaults(dataclasses.replace(cfg, data=fill_data_defaults(cfg.data, pre.config)),
                                 vit=is_vit(pre.trained))
    if args.print_config:
        return print_config(cfg)
    check_probe(cfg, pre)
    device = start_process(cfg.run.device, cfg.run.threads)
    out = RunDir.open(cfg.run.out_dir, args.resume, default=eval_out_dir(pre, output_name(cfg)))
    probe = LinearProbe(cfg, pre, out, device)
    cfg = probe.cfg  # data.batch_size clipped to a small training set
    state = out.load_resume(cfg, args.allow_config_change)
    if state is not None:
        probe.resume(state)
        done = out.finished("epoch", probe.epoch, cfg.run.epochs, "linear.json", "linear")
        if done is not None:
            dist.shutdown()
            return done
        out.announce_resume("epoch", probe.epoch)
    out.write_config(cfg, probe.resolved())
    if dist.is_main():
        print(probe.describe(), file=sys.stderr)
    epochs = cfg.run.epochs
    if probe.fit(progress) < epochs:
        out.report_stop("linear", f"epoch {probe.epoch} of {epochs}", "run.stop_after")
        dist.shutdown()
        return {"mode": probe.mode, "epochs_done": probe.epoch, "epochs": epochs, "out_dir": str(out.path),
                "stopped_early": True}
    result = probe.result()
    if dist.is_main():
        out.write_json("linear.json", result)
        print(format_result(result))
    dist.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
