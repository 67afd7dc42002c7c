"""The accuracy benchmark: Table 1 (linear) and Table 2 (fine-tuning) in the paper's layout, beside throughput.

    python benchmarks/accuracy.py --preset fashion-mnist [--seeds 0 1 2] [--collect] [--runs-root DIR ...]
    python benchmarks/accuracy.py --preset imagenet --data /data/imagenet [--gpus 8] [--execute]

``fashion-mnist``: MoCo v3, MoCo v3 + SDMP, DINO, DINO + SDMP with the tiny ViTs of the CPU configs (the
default run, ``configs/fashion_mnist_dino*.yaml``), equal step budgets per method, every seed. For each run:
pretraining (skipped when the run directory under ``--runs-root`` already holds ``backbone.pt``;
``--collect`` never trains), the k-NN monitor it wrote, linear evaluation in FAST MODE (cached features of
the evaluation view, each method's protocol: MoCo v3's last-layer class token, DINO's last 4 class tokens)
and a REDUCED fine-tuning protocol (the DeiT recipe for ``--finetune-steps`` steps instead of 100 epochs),
both on a fixed class-balanced subset of Fashion-MNIST (``--subset-train`` / ``--subset-val`` images per
class), each beside the same backbone at random initialisation. Both protocols are labelled as reduced in
every output: they are NOT the paper's. The paper's numbers (ImageNet-1K ViT-S, labelled as the paper's)
are shown beside the arm they correspond to only for orientation: different data, model and budget.
SDMP's effect is reported as the paired difference per seed (mean +- std) and compared with the seed spread.

``imagenet``: the paper's Table 1/2 rows that have a config here (ViT-S MoCo v3 / DINO with and without SDMP,
ViT-B MoCo v3, ResNet-50 MoCo v3). It prints the exact torchrun commands (pretraining, linear evaluation,
fine-tuning) and an estimate of the GPU-hours from the measured step throughput in
``benchmarks/results/throughput-cuda.json`` (or says that none has been measured). ``--execute`` runs them
(needs the data and the GPUs; not exercised here: this project's CI machine has no GPU).

Presets named by the issue but not built: ``cifar`` (Table 5: needs a CIFAR reader and CIFAR-style
ResNets), ImageNet-100 class subsets, label fractions (Table 3) and ImageNet-A / -R (Table 4).

Writes Markdown and JSON (default ``docs/results/accuracy_<preset>.{md,json}``) with the environment record.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import env_record, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# arm -> (run-directory tag, pretraining config file and overrides, linear protocol, the paper's ImageNet ViT-S
# Table 1 / Table 2 numbers)
FASHION_ARMS = {
    "mocov3": ("mocov3", (None, ["sdmp.enabled=false"]), "mocov3", 73.2, 78.7),
    "mocov3+sdmp": ("mocov3_sdmp", (None, ["sdmp.enabled=true"]), "mocov3", 73.8, 79.1),
    "dino": ("dino", ("configs/fashion_mnist_dino.yaml", []), "dino", 76.0, 79.7),
    "dino+sdmp": ("dino_sdmp", ("configs/fashion_mnist_dino_sdmp.yaml", []), "dino", 76.4, 80.0),
}
PAIRS = (("mocov3", "mocov3+sdmp"), ("dino", "dino+sdmp"))
LINEAR_LABEL = "linear, fast mode (cached features), reduced: NOT the paper protocol"


def _ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    return f"{xs[0]:.2f}" if len(xs) == 1 else f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def subset_folder(source: Path, out: Path, per_class_train: int, per_class_val: int) -> Path:
    """A class-balanced subset of ``source`` (train/ and val/) as symbolic links: the first N files per class."""
    from sdmp_fast.datasets import scan_folder
    done = out / ".complete"
    if done.is_file():
        return out
    for part, n in (("train", per_class_train), ("val", per_class_val)):
        split = scan_folder(source / part)[0]
        taken: dict[int, int] = {}
        for path, label in split.samples:
            if n and taken.get(label, 0) >= n:
                continue
            taken[label] = taken.get(label, 0) + 1
            dst = out / part / split.classes[label] / Path(path).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.symlink(os.path.abspath(path), dst)
    done.write_text("ok\n")
    return out


def _find_run(roots: list[Path], tag: str, seed: int) -> Path | None:
    for r in roots:
        d = r / f"{tag}-s{seed}"
        if (d / "backbone.pt").is_file():
            return d
    return None


def _evaluate(command, result: Path, argv: list[str]) -> dict:
    """Run an evaluation command (in-process) unless its result file exists; ``--resume auto`` continues a partial one."""
    if result.is_file():
        return json.loads(result.read_text())
    return command([*argv, "--resume", "auto"], progress=False)


def fashion_mnist(args) -> dict:
    from sdmp_fast import finetune, linear
    from sdmp_fast.datasets import default_cache_dir, find_data
    from sdmp_fast.pretrain import run as pretrain
    arms = {a: FASHION_ARMS[a] for a in args.arms}
    roots = [Path(r) for r in args.runs_root]
    data_root = find_data(args.data)
    source = data_root.train.parent
    sub_name = f"accuracy-subset-{data_root.name}-{args.subset_train}-{args.subset_val}"
    subset = subset_folder(source, default_cache_dir() / sub_name, args.subset_train, args.subset_val)
    rows = []
    for arm, (tag, pre_args, protocol, _, _) in arms.items():
        for seed in args.seeds:
            run_dir = _find_run(roots, tag, seed)
            if run_dir is None:
                if args.collect:
                    raise SystemExit(f"error: --collect: no finished run {tag}-s{seed} under {', '.join(map(str, roots))}")
                run_dir = roots[0] / f"{tag}-s{seed}"
                config, arm_overrides = pre_args
                options = (["--config", str(ROOT / config)] if config else []) + (["--data", args.data] if args.data else [])
                pretrain([*options, "--out", str(run_dir), *arm_overrides, f"run.seed={seed}",
                          *args.pretrain_overrides], progress=False)
            summary = json.loads((run_dir / "summary.json").read_text())
            knn = json.loads((run_dir / "knn.json").read_text()) if (run_dir / "knn.json").is_file() else None
            # evaluation directories are named by their settings: a finished one is read back, a partial one resumed
            sub = f"sub{args.subset_train}x{args.subset_val}"
            lin_dir = run_dir / "accuracy" / f"linear_fast-{protocol}-e{args.linear_epochs}-{sub}"
            ft_dir = run_dir / "accuracy" / f"finetune-s{args.finetune_steps}x{args.finetune_batch}-{sub}"
            t0 = time.time()
            lin = _evaluate(linear.run, lin_dir / "linear.json", [
                "--pretrained", str(run_dir), "--cached-features", "--protocol", protocol, "--data", str(subset),
                "--out", str(lin_dir), f"run.seed={seed}", f"run.epochs={args.linear_epochs}", *args.eval_overrides])
            lin_s = time.time() - t0
            t0 = time.time()
            ft = _evaluate(finetune.run, ft_dir / "finetune.json", [
                "--pretrained", str(run_dir), "--data", str(subset), "--out", str(ft_dir), f"run.seed={seed}",
                f"run.max_steps={args.finetune_steps}", f"data.batch_size={args.finetune_batch}", "run.eval_every=0",
                *args.eval_overrides])
            ft_s = time.time() - t0
            rows.append({"arm": arm, "seed": seed, "run": str(run_dir),
                         "pretrain_steps": summary["steps"], "pretrain_seconds": summary["seconds"],
                         "pretrain_images_per_s": summary["images_per_s"],
                         "knn_trained": knn["trained"]["top1"] if knn else None,
                         "knn_random": knn["random_init"]["top1"] if knn else None,
                         "linear_trained": lin["trained"]["top1"], "linear_random": lin["random_init"]["top1"],
                         "linear_seconds": round(lin_s, 1),
                         "finetune_trained": ft["trained"]["top1"], "finetune_random": ft["random_init"]["top1"],
                         "finetune_seconds": round(ft_s, 1)})
            print(f"[accuracy] {arm} seed {seed}: linear {rows[-1]['linear_trained']:.2f} "
                  f"(random {rows[-1]['linear_random']:.2f}), fine-tune {rows[-1]['finetune_trained']:.2f} "
                  f"(random {rows[-1]['finetune_random']:.2f})", file=sys.stderr)
    return {"rows": rows, "subset": str(subset), "data": data_root.name}


def fashion_tables(res: dict, args, device: str) -> tuple[str, dict]:
    rows = res["rows"]
    by = {a: [r for r in rows if r["arm"] == a] for a in args.arms}
    agg: dict = {}
    lines = [f"# Accuracy benchmark, preset fashion-mnist ({res['data']})", "",
             f"Seeds {args.seeds}; device {device}. Evaluation subset: {args.subset_train or 'all'} train / "
             f"{args.subset_val or 'all'} val images per class. Paper numbers are ImageNet-1K ViT-S (SDMP Tables 1 "
             "and 2), shown for orientation only: other data, model and budget.", ""]
    for table, key, label, paper_col in (
            ("Table 1 (linear)", "linear", LINEAR_LABEL, 3),
            ("Table 2 (fine-tuning)", "finetune",
             f"fine-tuning, DeiT recipe for {args.finetune_steps} steps x {args.finetune_batch} images, reduced: "
             "NOT the paper's 100 epochs", 4)):
        lines += [f"## {table}: {label}", "",
                  "| arm | seeds | ours, trained | random init | k-NN trained | paper (ImageNet, ViT-S) | "
                  "pretrain images/s | pretrain wall s | device | protocol |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for arm, rs in by.items():
            if not rs:
                continue
            t = [r[f"{key}_trained"] for r in rs]
            rnd = [r[f"{key}_random"] for r in rs]
            knn = [r["knn_trained"] for r in rs if r["knn_trained"] is not None]
            agg.setdefault(arm, {})[key] = {"trained": t, "random_init": rnd}
            agg[arm]["knn"] = knn
            lines.append(f"| {arm} | {len(rs)} | {_ms(t)} | {_ms(rnd)} | {_ms(knn)} | "
                         f"{FASHION_ARMS[arm][paper_col]} (paper) | {_ms([r['pretrain_images_per_s'] for r in rs])} | "
                         f"{_ms([r['pretrain_seconds'] for r in rs])} | {device} | {key} reduced |")
        lines += ["", "SDMP minus baseline, paired by seed:", ""]
        for base, sdmp in PAIRS:
            if base not in by or sdmp not in by or not by[base] or not by[sdmp]:
                continue
            pa = {r["seed"]: r[f"{key}_trained"] for r in by[base]}
            pb = {r["seed"]: r[f"{key}_trained"] for r in by[sdmp]}
            seeds = sorted(set(pa) & set(pb))
            diffs = [pb[s] - pa[s] for s in seeds]
            spread = max(statistics.stdev(list(pa.values())) if len(pa) > 1 else 0.0,
                         statistics.stdev(list(pb.values())) if len(pb) > 1 else 0.0)
            paper_gain = FASHION_ARMS[sdmp][paper_col] - FASHION_ARMS[base][paper_col]
            verdict = ("exceeds" if diffs and abs(statistics.mean(diffs)) > spread and len(diffs) > 1
                       else "does not exceed")
            agg.setdefault("gains", {})[f"{key}:{sdmp}"] = {"diffs": diffs, "seed_spread": spread}
            lines.append(f"* {sdmp} vs {base}: {_ms(diffs)} points over seeds {seeds} ({verdict} the seed spread, "
                         f"largest arm std {spread:.2f}); the paper's ImageNet gain: {paper_gain:+.1f}")
        lines.append("")
    lines += ["The pretraining throughput is the wall-clock rate of each run (CPU, inflated by anything else "
              "running at the time); `docs/performance.md` has the quiet loader and step figures.",
              "", f"Generated by `python benchmarks/accuracy.py {' '.join(args.argv)}`."]
    return "\n".join(lines) + "\n", agg


# ----------------------------------------------------------------------------- imagenet

IMAGENET_ROWS = [  # (Table, method row, pretraining config, linear protocol, paper linear, paper fine-tune)
    ("MoCo v3 ViT-S", "configs/mocov3_vit_s.yaml", "mocov3", 73.2, 78.7),
    ("+ SDMP ViT-S", "configs/mocov3_sdmp_vit_s.yaml", "mocov3", 73.8, 79.1),
    ("DINO ViT-S", "configs/dino_vit_s.yaml", "dino", 76.0, 79.7),
    ("+ SDMP ViT-S", "configs/dino_sdmp_vit_s.yaml", "dino", 76.4, 80.0),
    ("MoCo v3 ViT-B", "configs/mocov3_vit_b.yaml", "mocov3", 76.7, None),
    ("+ SDMP ViT-B", "configs/mocov3_sdmp_vit_b.yaml", "mocov3", 77.2, None),
    ("MoCo v3 ResNet-50", "configs/mocov3_r50.yaml", "mocov3", 72.8, None),
    ("+ SDMP ResNet-50", "configs/mocov3_sdmp_r50.yaml", "mocov3", 73.5, None),
]


def _gpu_hours(config: str) -> str:
    """GPU-hours of a pretraining config from the measured CUDA step throughput, or why there is no estimate."""
    path = ROOT / "benchmarks" / "results" / "throughput-cuda.json"
    if not path.is_file():
        return "no estimate: no GPU step throughput measured yet (run make gpu-check on a GPU machine)"
    from sdmp_fast.config import load_config
    cfg = load_config(ROOT / config)
    rows = json.loads(path.read_text())["results"].get("step", [])
    match = [r for r in rows if r.get("method") == cfg.method.name and r.get("backbone") == cfg.model.backbone
             and r.get("sdmp") == cfg.sdmp.enabled and r.get("images_per_s")]
    if not match:
        return f"no estimate: no measured step for {cfg.method.name} / {cfg.model.backbone} / sdmp={cfg.sdmp.enabled}"
    ips = match[0]["images_per_s"]
    hours = cfg.run.epochs * 1_281_167 / ips / 3600
    return f"about {hours:.0f} GPU-hours ({ips:.0f} images/s per GPU measured, {cfg.run.epochs} epochs, compute only)"


def imagenet(args) -> dict:
    data, gpus = args.data or "/data/imagenet", args.gpus
    cmds = []
    for name, config, protocol, lin, ft in IMAGENET_ROWS:
        out = f"runs/imagenet/{Path(config).stem}"
        run = f"torchrun --standalone --nproc_per_node {gpus}"
        steps = [f"{run} -m sdmp_fast.pretrain --config {config} --data {data} --out {out} --resume auto",
                 f"{run} -m sdmp_fast.linear --pretrained {out} --protocol {protocol} "
                 f"--config configs/eval/linear_{protocol}.yaml --data {data} --resume auto"]
        if ft is not None:
            steps.append(f"{run} -m sdmp_fast.finetune --pretrained {out} --config configs/eval/finetune_deit.yaml "
                         f"--data {data} --resume auto")
        cmds.append({"row": name, "config": config, "paper_linear": lin, "paper_finetune": ft, "commands": steps,
                     "estimate": _gpu_hours(config)})
    print("# ImageNet preset: the paper's Table 1/2 rows with a config here")
    for c in cmds:
        print(f"\n## {c['row']} (paper: linear {c['paper_linear']}, fine-tune {c['paper_finetune'] or 'n/a'}); "
              f"{c['estimate']}")
        for s in c["commands"]:
            print(s)
    import torch
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, choices=["fashion-mnist", "imagenet", "cifar"])
    p.add_argument("--data", default="", help="fashion-mnist: an ImageNet-style folder instead of the embedded data; "
                                              "imagenet: the ImageNet folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(FASHION_ARMS), choices=list(FASHION_ARMS))
    p.add_argument("--runs-root", nargs="+", default=["runs/accuracy"],
                   help="where run directories <arm>-s<seed> are found (first: where new ones are written)")
    p.add_argument("--collect", action="store_true", help="only evaluate finished pretraining runs")
    p.add_argument("--subset-train", type=int, default=500, help="evaluation train images per class (0 = all)")
    p.add_argument("--subset-val", type=int, default=200, help="evaluation val images per class (0 = all)")
    p.add_argument("--linear-epochs", type=int, default=90)
    p.add_argument("--finetune-steps", type=int, default=60)
    p.add_argument("--finetune-batch", type=int, default=32)
    p.add_argument("--pretrain-overrides", nargs="*", default=[], help="key=value for every pretraining run")
    p.add_argument("--eval-overrides", nargs="*", default=[], help="key=value for the linear and fine-tuning runs")
    p.add_argument("--gpus", type=int, default=8, help="imagenet: GPUs per node in the printed commands")
    p.add_argument("--execute", action="store_true", help="imagenet: run the printed commands")
    p.add_argument("--results", default=None, help="output stem (default: docs/results/accuracy_<preset>)")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.preset == "cifar":
        raise SystemExit("error: --preset cifar is not built yet (it needs a CIFAR reader feeding the Batch contract "
                         "and CIFAR-style ResNet-50/101); see the issue tracker")
    if args.preset == "imagenet":
        return imagenet(args)
    import torch
    t0 = time.time()
    res = fashion_mnist(args)
    md, agg = fashion_tables(res, args, "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name())
    md += f"\nWall time of this invocation: {time.time() - t0:.0f} s.\n"
    stem = Path(args.results or f"docs/results/accuracy_{args.preset.replace('-', '_')}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    record = {"env": env_record(torch.device("cpu")), "args": args.argv, "labels": {
        "linear": LINEAR_LABEL, "finetune": f"reduced: {args.finetune_steps} steps x {args.finetune_batch}"},
        **res, "aggregate": agg, "seconds": round(time.time() - t0, 1)}
    write_json(stem.with_suffix(".json"), record)
    stem.with_suffix(".md").write_text(md)
    print(md)
    return record


if __name__ == "__main__":
    main()
