"""``fashion-mnist``: MoCo v3, MoCo v3 + SDMP, DINO, DINO + SDMP with the tiny ViTs of the CPU configs (the
default run, ``configs/fashion_mnist_dino*.yaml``), equal step budgets per method, every seed. For each run:
pretraining (skipped when the run directory under ``--runs-root`` already holds ``backbone.pt``;
``--collect`` never trains), the k-NN monitor it wrote, linear evaluation in FAST MODE (cached features of
the evaluation view, each method's protocol: MoCo v3's last-layer class token, DINO's last 4 class tokens)
and a REDUCED fine-tuning protocol (the DeiT recipe for ``--finetune-steps`` steps instead of 100 epochs, at
DeiT's absolute lr 5e-4 for batch 32: ``--finetune-lr`` 0.008 per 512, because at DeiT's per-batch lr, 3e-5,
a few hundred steps stay at chance), both on a fixed class-balanced subset of Fashion-MNIST
(``--subset-train`` / ``--subset-val`` images per class), each beside the same backbone at random
initialisation. Both protocols are labelled as reduced in every output: they are NOT the paper's. The paper's
numbers (ImageNet-1K ViT-S, labelled as the paper's) are shown beside the arm they correspond to only for
orientation: different data, model and budget. SDMP's effect is reported as the paired difference per seed
(mean +- std) and compared with the seed spread."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks import package as pkg
from benchmarks.presets.common import (
    ROOT,
    eval_subset,
    evaluate,
    linear_eval,
    mean_std,
    mean_std_of,
    paired_gain,
    pretrained_run,
    run_record,
    seed_bars,
)

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


def labels(args, res: dict) -> dict:
    """How each protocol is labelled in the JSON record."""
    return {"linear": LINEAR_LABEL,
            "finetune": f"reduced: {args.finetune_steps} steps x {args.finetune_batch}, base lr {args.finetune_lr:g}"}


def finetune_eval(run_dir: Path, subset: Path, sub: str, seed: int, args) -> tuple[dict, float]:
    """``sdmp_fast.finetune`` on a run for ``--finetune-steps`` (result read back when its directory has one);
    returns (result, seconds)."""
    name = f"finetune-s{args.finetune_steps}x{args.finetune_batch}-lr{args.finetune_lr:g}-{sub}"
    ft_dir = run_dir / "accuracy" / name
    t0 = time.time()
    ft = evaluate(pkg.run_finetune, ft_dir / "finetune.json", [
        "--pretrained", str(run_dir), "--data", str(subset), "--out", str(ft_dir), f"run.seed={seed}",
        f"run.max_steps={args.finetune_steps}", f"data.batch_size={args.finetune_batch}", "run.eval_every=0",
        f"optim.lr={args.finetune_lr}", *args.eval_overrides])
    return ft, time.time() - t0


def run(args) -> dict:
    """Pretrain (or find) every arm and seed, then evaluate each by linear probe and fine-tuning on the subset."""
    roots = [Path(r) for r in args.runs_root]
    data_root = pkg.find_data(args.data)
    subset = eval_subset(data_root.train.parent, data_root.name, args.subset_train, args.subset_val)
    # evaluation directories are named by their settings: a finished one is read back, a partial one resumed
    sub = f"sub{args.subset_train}x{args.subset_val}"
    rows = []
    for arm in dict.fromkeys(args.arms):  # each arm once, in the order given
        tag, (config, arm_overrides), protocol, _, _ = FASHION_ARMS[arm]
        options = (["--config", str(ROOT / config)] if config else []) + (["--data", args.data] if args.data else [])
        for seed in args.seeds:
            run_dir = pretrained_run(roots, tag, seed, args.collect,
                                     [*options, *arm_overrides, *args.pretrain_overrides])
            lin, lin_s = linear_eval(run_dir, protocol, seed, args.linear_epochs, True, str(subset), sub,
                                     args.eval_overrides)
            ft, ft_s = finetune_eval(run_dir, subset, sub, seed, args)
            rows.append({"arm": arm, "seed": seed, **run_record(run_dir),
                         "linear_trained": lin["trained"]["top1"], "linear_random": lin["random_init"]["top1"],
                         "linear_seconds": lin_s,
                         "finetune_trained": ft["trained"]["top1"], "finetune_random": ft["random_init"]["top1"],
                         "finetune_seconds": round(ft_s, 1)})
            print(f"[accuracy] {arm} seed {seed}: linear {rows[-1]['linear_trained']:.2f} "
                  f"(random {rows[-1]['linear_random']:.2f}), fine-tune {rows[-1]['finetune_trained']:.2f} "
                  f"(random {rows[-1]['finetune_random']:.2f})", file=sys.stderr)
    return {"rows": rows, "subset": str(subset), "data": data_root.name}


def table(by: dict, key: str, paper_col: int, device: str, agg: dict) -> list[str]:
    """One table's rows (arm: ours, random init, k-NN, the paper's) and the paired SDMP gains, into ``agg`` too."""
    lines = ["| arm | seeds | ours, trained | random init | k-NN trained | paper (ImageNet, ViT-S) | "
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
        lines.append(f"| {arm} | {len(rs)} | {mean_std(t)} | {mean_std(rnd)} | {mean_std(knn)} | "
                     f"{FASHION_ARMS[arm][paper_col]} (paper) | {mean_std_of(rs, 'pretrain_images_per_s')} | "
                     f"{mean_std_of(rs, 'pretrain_seconds')} | {device} | {key} reduced |")
    lines += ["", "SDMP minus baseline, paired by seed:", ""]
    for base, sdmp in PAIRS:
        gain = paired_gain(by.get(base, []), by.get(sdmp, []), f"{key}_trained")
        if gain is None:
            continue
        paper_gain = FASHION_ARMS[sdmp][paper_col] - FASHION_ARMS[base][paper_col]
        agg.setdefault("gains", {})[f"{key}:{sdmp}"] = {"diffs": gain["diffs"], "seed_spread": gain["seed_spread"]}
        lines.append(f"* {sdmp} vs {base}: {mean_std(gain['diffs'])} points over seeds {gain['seeds']} "
                     f"({gain['verdict']} the seed spread, largest arm std {gain['seed_spread']:.2f}); the paper's "
                     f"ImageNet gain: {paper_gain:+.1f}")
    return lines


def tables(res: dict, args, device: str) -> tuple[str, dict]:
    """(Markdown: Table 1 and Table 2 in the paper's layout, aggregate record)."""
    by = {a: [r for r in res["rows"] if r["arm"] == a] for a in args.arms}
    agg: dict = {}
    lines = [f"# Accuracy benchmark, preset fashion-mnist ({res['data']})", "",
             f"Seeds {args.seeds}; device {device}. Evaluation subset: {args.subset_train or 'all'} train / "
             f"{args.subset_val or 'all'} val images per class. Paper numbers are ImageNet-1K ViT-S (SDMP Tables 1 "
             "and 2), shown for orientation only: other data, model and budget.", ""]
    absolute = args.finetune_lr * args.finetune_batch / 512
    finetune_label = (f"fine-tuning, DeiT recipe for {args.finetune_steps} steps x {args.finetune_batch} images at "
                      f"base lr {args.finetune_lr:g} per 512 (absolute {absolute:.2g}), reduced: NOT the paper's "
                      "100 epochs")
    for name, key, label, paper_col in (("Table 1 (linear)", "linear", LINEAR_LABEL, 3),
                                        ("Table 2 (fine-tuning)", "finetune", finetune_label, 4)):
        lines += [f"## {name}: {label}", ""] + table(by, key, paper_col, device, agg) + [""]
    lines += ["The pretraining throughput is the wall-clock rate of each run (CPU, inflated by anything else "
              "running at the time); `docs/performance.md` has the quiet loader and step figures.",
              "", f"Generated by `python benchmarks/accuracy.py {' '.join(args.argv)}`."]
    return "\n".join(lines) + "\n", agg


def bars(res: dict, args) -> dict:
    """The PNG's panels: linear, fine-tuning and k-NN top-1 per arm, trained and at random init, over seeds."""
    return seed_bars(res["rows"], lambda r: r["arm"], [("linear top-1 (%), reduced", "linear"),
                                                        ("fine-tuning top-1 (%), reduced", "finetune"),
                                                        ("k-NN top-1 (%)", "knn")])
