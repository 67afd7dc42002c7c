"""The accuracy benchmark: Table 1 (linear) and Table 2 (fine-tuning) in the paper's layout, beside throughput.

    python benchmarks/accuracy.py --preset fashion-mnist [--seeds 0 1 2] [--collect] [--runs-root DIR ...]
    python benchmarks/accuracy.py --preset imagenet --data /data/imagenet [--gpus 8] [--execute]
    python benchmarks/accuracy.py --preset cifar --data-cifar10 DIR [--data-cifar100 DIR] [--cifar-model r50|r101]
                                  [--cifar-epochs 200|2000] [--pretrain-steps N --linear-fast --linear-epochs E]

Each preset is a module of ``benchmarks/presets/`` (what each runs is listed below). Other tables live in the
evaluation commands rather than here: ImageNet-100 (Table 11) is ``data.class_subset`` with the imagenet
commands, semi-supervised fine-tuning (Table 3) ``sdmp_fast.finetune --label-fraction`` / ``--label-subset``,
ImageNet-A / -R (Table 4) ``sdmp_fast.finetune --ood-val``.

Writes Markdown and JSON with the environment record, by default to runs/benchmarks/accuracy_<preset>.{md,json}
(untracked); the tables the docs show are written with ``--results docs/results/accuracy_<preset>``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import package as pkg  # noqa: E402
from benchmarks.package import HelpFormatter  # noqa: E402
from benchmarks.presets import cifar, fashion_mnist, imagenet  # noqa: E402
from benchmarks.timing import env_record, result_path, write_json  # noqa: E402

PRESETS = {"fashion-mnist": fashion_mnist, "imagenet": imagenet, "cifar": cifar}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/accuracy.py", description=__doc__,
                                formatter_class=HelpFormatter,
                                epilog="\n\n".join(mod.__doc__ for mod in PRESETS.values()))
    p.add_argument("--preset", required=True, choices=list(PRESETS),
                   help="which tables (each preset is described below)")
    p.add_argument("--data", default="", help="fashion-mnist: an ImageNet-style folder instead of the embedded data; "
                                              "imagenet: the ImageNet folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="fashion-mnist: pretraining seeds per arm (the tables give mean and std over them)")
    p.add_argument("--arms", nargs="+", default=list(fashion_mnist.FASHION_ARMS),
                   choices=list(fashion_mnist.FASHION_ARMS), help="fashion-mnist: the methods compared")
    p.add_argument("--runs-root", nargs="+", default=["runs/accuracy"],
                   help="where run directories <arm>-s<seed> are found (first: where new ones are written)")
    p.add_argument("--collect", action="store_true", help="only evaluate finished pretraining runs")
    p.add_argument("--subset-train", type=int, default=None,
                   help="evaluation train images per class (0 = all; default: fashion-mnist 500, cifar 0)")
    p.add_argument("--subset-val", type=int, default=None,
                   help="evaluation val images per class (0 = all; default: fashion-mnist 200, cifar 0)")
    p.add_argument("--linear-epochs", type=int, default=90, help="linear evaluation epochs (the protocol's: 90)")
    p.add_argument("--finetune-steps", type=int, default=400, help="fine-tuning optimizer steps per run")
    p.add_argument("--finetune-batch", type=int, default=32, help="fine-tuning global batch size")
    p.add_argument("--finetune-lr", type=float, default=0.008,
                   help="fine-tuning base lr per 512 images (DeiT: 5e-4); the reduced default keeps DeiT's ABSOLUTE lr "
                        "5e-4 at batch 32: a few hundred steps at DeiT's per-batch lr (3e-5) stay near chance")
    p.add_argument("--pretrain-overrides", nargs="*", default=[], help="key=value for every pretraining run")
    p.add_argument("--eval-overrides", nargs="*", default=[], help="key=value for the linear and fine-tuning runs")
    p.add_argument("--gpus", type=int, default=8, help="imagenet: GPUs per node in the printed commands")
    p.add_argument("--execute", action="store_true", help="imagenet: run the printed commands")
    p.add_argument("--data-cifar10", default="", metavar="DIR", help="cifar: the extracted cifar-10-batches-py folder")
    p.add_argument("--data-cifar100", default="", metavar="DIR", help="cifar: the extracted cifar-100-python folder")
    p.add_argument("--cifar-model", default="r50", choices=list(cifar.CIFAR_BACKBONES), help="cifar: Table 5's ResNet")
    p.add_argument("--cifar-epochs", type=int, default=200, choices=[200, 2000],
                   help="cifar: Table 5's pretraining epochs")
    p.add_argument("--cifar-arms", nargs="+", default=list(cifar.CIFAR_ARMS), choices=list(cifar.CIFAR_ARMS),
                   help="cifar: the methods compared")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="cifar: reduced budget, pretrain this many steps instead of the epochs (0 = the paper's "
                        "epochs)")
    p.add_argument("--linear-fast", action="store_true",
                   help="cifar: reduced budget, linear evaluation on cached features (fast mode, not the paper "
                        "protocol)")
    p.add_argument("--results", default=None, help="output stem (default: runs/benchmarks/accuracy_<preset>; the "
                                                   "docs' tables: --results docs/results/accuracy_<preset>)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.preset == "imagenet":
        return imagenet.run(args)
    default_subset = (500, 200) if args.preset == "fashion-mnist" else (0, 0)
    args.subset_train = default_subset[0] if args.subset_train is None else args.subset_train
    args.subset_val = default_subset[1] if args.subset_val is None else args.subset_val
    preset = PRESETS[args.preset]
    t0 = time.time()
    device = "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    res = preset.run(args)
    md, agg = preset.tables(res, args, device)
    md += f"\nWall time of this invocation: {time.time() - t0:.0f} s.\n"
    stem = result_path(args.results, f"accuracy_{args.preset.replace('-', '_')}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    md += "\n" + pkg.bar_png(preset.bars(res, args), stem.with_suffix(".png"), "top-1 (%)",
                             f"accuracy benchmark, preset {args.preset}, seeds {args.seeds}, {device}") + "\n"
    record = {"env": env_record(torch.device("cpu")), "args": args.argv, "labels": preset.labels(args, res),
              **res, "aggregate": agg, "seconds": round(time.time() - t0, 1)}
    write_json(stem.with_suffix(".json"), record)
    stem.with_suffix(".md").write_text(md)
    print(md)
    return record


if __name__ == "__main__":
    main()
