"""``imagenet``: the paper's Table 1/2 rows that have a config here (ViT-S MoCo v3 / DINO with and without SDMP,
ViT-B MoCo v3, ResNet-50 MoCo v3). It prints the exact torchrun commands (pretraining, linear evaluation,
fine-tuning) and an estimate of the GPU-hours from the measured step throughput in
``benchmarks/results/throughput-cuda.json`` (or says that none has been measured). ``--execute`` runs them
(it needs the data and the GPUs)."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import package as pkg
from benchmarks.presets.common import ROOT

IMAGENET_ROWS = [  # (method row, pretraining config, linear protocol, paper linear, paper fine-tune)
    ("MoCo v3 ViT-S", "configs/mocov3_vit_s.yaml", "mocov3", 73.2, 78.7),
    ("+ SDMP ViT-S", "configs/mocov3_sdmp_vit_s.yaml", "mocov3", 73.8, 79.1),
    ("DINO ViT-S", "configs/dino_vit_s.yaml", "dino", 76.0, 79.7),
    ("+ SDMP ViT-S", "configs/dino_sdmp_vit_s.yaml", "dino", 76.4, 80.0),
    ("MoCo v3 ViT-B", "configs/mocov3_vit_b.yaml", "mocov3", 76.7, None),
    ("+ SDMP ViT-B", "configs/mocov3_sdmp_vit_b.yaml", "mocov3", 77.2, None),
    ("MoCo v3 ResNet-50", "configs/mocov3_r50.yaml", "mocov3", 72.8, None),
    ("+ SDMP ResNet-50", "configs/mocov3_sdmp_r50.yaml", "mocov3", 73.5, None),
]


def gpu_hours(config: str) -> str:
    """GPU-hours of a pretraining config from the measured CUDA step throughput, or why there is no estimate."""
    path = ROOT / "benchmarks" / "results" / "throughput-cuda.json"
    if not path.is_file():
        return "no estimate: no GPU step throughput measured yet (run make gpu-check on a GPU machine)"
    cfg = pkg.load_config(ROOT / config)
    results = json.loads(path.read_text())["results"]
    name = cfg.method.name + ("+sdmp" if cfg.sdmp.enabled else "")
    # the step rows of throughput.py (eager) and its step_modes rows (eager / compile / graph): the fastest
    match = [r for r in results.get("step", []) + results.get("step_modes", [])
             if r.get("method") == name and r.get("backbone") == cfg.model.backbone and r.get("images_per_s")]
    if not match:
        return f"no estimate: no measured step for {name} / {cfg.model.backbone}"
    best = max(match, key=lambda r: r["images_per_s"])
    ips = best["images_per_s"]
    hours = cfg.run.epochs * 1_281_167 / ips / 3600
    return (f"about {hours:.0f} GPU-hours ({ips:.0f} images/s per GPU measured, {best.get('mode', 'eager')} step at "
            f"batch {best.get('batch')}, {cfg.run.epochs} epochs, compute only)")


def run(args) -> dict:
    """Print (and with --execute run) the pretraining and evaluation commands of every row."""
    data, gpus = args.data or "/data/imagenet", args.gpus
    cmds = []
    for name, config, protocol, lin, ft in IMAGENET_ROWS:
        out = f"runs/imagenet/{Path(config).stem}"
        launch = f"torchrun --standalone --nproc_per_node {gpus}"
        steps = [f"{launch} -m sdmp_fast.pretrain --config {config} --data {data} --out {out} --resume auto",
                 f"{launch} -m sdmp_fast.linear --pretrained {out} --protocol {protocol} "
                 f"--config configs/eval/linear_{protocol}.yaml --data {data} --resume auto"]
        if ft is not None:
            steps.append(f"{launch} -m sdmp_fast.finetune --pretrained {out} --config configs/eval/finetune_deit.yaml "
                         f"--data {data} --resume auto")
        cmds.append({"row": name, "config": config, "paper_linear": lin, "paper_finetune": ft, "commands": steps,
                     "estimate": gpu_hours(config)})
    print("# ImageNet preset: the paper's Table 1/2 rows with a config here")
    for c in cmds:
        print(f"\n## {c['row']} (paper: linear {c['paper_linear']}, fine-tune {c['paper_finetune'] or 'n/a'}); "
              f"{c['estimate']}")
        for s in c["commands"]:
            print(s)
    can_run = torch.cuda.is_available() and Path(data).is_dir()
    if args.execute:
        if not can_run:
            raise SystemExit(f"error: --execute needs CUDA GPUs and the ImageNet folder {data}; "
                             f"found cuda={torch.cuda.is_available()}, folder={Path(data).is_dir()}. Nothing was run.")
        for c in cmds:
            for s in c["commands"]:
                print(f"[accuracy] running: {s}", file=sys.stderr)
                subprocess.run(shlex.split(s), check=True, cwd=ROOT)
    else:
        print("\nNothing was run (add --execute on a machine with the GPUs and the data).")
    return {"rows": cmds, "executed": bool(args.execute)}
