"""``cifar``: Table 5 (CIFAR-10 / CIFAR-100 linear evaluation of MoCo v3 and MoCo v3 + SDMP with a CIFAR-style
ResNet-50 or -101, 200 or 2000 epochs) from the user's ``cifar-10-batches-py`` / ``cifar-100-python`` folders
(``--data-cifar10`` / ``--data-cifar100``; materialised once as PNG folders). Per data set, arm and seed:
pretraining with ``configs/cifar{10,100}_mocov3[_sdmp]_r50.yaml`` (or ``--collect``: finished runs only), then
``sdmp_fast.linear`` with MoCo v3's protocol (augmented views, 90 epochs, lr 0.1 per 256 for ResNets). The
table has the paper's layout (its i-mix rows are shown as not run: i-mix is not implemented here) with the
paper's number, ours, the difference, throughput, wall time and the protocol. ``--pretrain-steps N`` (instead of
the epochs), ``--linear-fast`` (cached features) and ``--linear-epochs`` give a short run that every output
labels as REDUCED. The paper does not give CIFAR's other hyperparameters: the configs use MoCo v3's ResNet
recipe at 32 px (see their comments)."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from benchmarks import package as pkg
from benchmarks.presets.common import (
    ROOT,
    eval_subset,
    linear_eval,
    mean_std,
    mean_std_of,
    paired_gain,
    pretrained_run,
    run_record,
    seed_bars,
)

CIFAR_SETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
CIFAR_ARMS = {"mocov3": "mocov3", "mocov3+sdmp": "mocov3_sdmp"}  # arm -> config / run-directory tag
CIFAR_BACKBONES = {"r50": "resnet50_cifar", "r101": "resnet101_cifar"}
# SDMP Table 5: (model, pretraining epochs) -> method row -> (CIFAR-10, CIFAR-100) linear top-1
CIFAR_PAPER = {
    ("r50", 200): {"MoCo v3": (86.5, 63.2), "+ i-mix": (88.6, 66.1), "+ SDMP": (89.5, 68.2)},
    ("r50", 2000): {"MoCo v3": (93.7, 69.0), "+ i-mix": (95.4, 77.3), "+ SDMP": (95.8, 78.7)},
    ("r101", 200): {"MoCo v3": (86.4, 63.3), "+ i-mix": (89.4, 67.7), "+ SDMP": (90.0, 69.7)},
    ("r101", 2000): {"MoCo v3": (93.8, 68.5), "+ i-mix": (95.8, 78.4), "+ SDMP": (95.8, 80.0)},
}
CIFAR_ROWS = {"MoCo v3": "mocov3", "+ i-mix": None, "+ SDMP": "mocov3+sdmp"}  # paper row -> our arm (None: not run)


def protocol(args) -> tuple[str, bool]:
    """(label of the pretraining + linear protocol, whether the budget is reduced)."""
    reduced = bool(args.pretrain_steps) or args.linear_fast or args.linear_epochs != 90
    pre = (f"pretraining {args.pretrain_steps} steps instead of {args.cifar_epochs} epochs" if args.pretrain_steps
           else f"pretraining {args.cifar_epochs} epochs")
    lin = ("linear fast mode (cached features), not the paper protocol" if args.linear_fast
           else "MoCo v3 linear protocol (augmented views, lr 0.1 per 256)") + f", {args.linear_epochs} epochs"
    label = f"{pre}; {lin}" + (f"; pretraining overrides {' '.join(args.pretrain_overrides)}"
                                if args.pretrain_overrides else "")
    return (f"REDUCED budget: {label}: NOT the paper's setting" if reduced else label), reduced


def data_folders(args) -> dict[str, str]:
    """{data set: folder} from --data-cifar10 / --data-cifar100, each checked (and materialised) up front."""
    given = {"cifar10": args.data_cifar10, "cifar100": args.data_cifar100}
    if not any(given.values()):
        raise SystemExit("error: --preset cifar needs --data-cifar10 DIR and/or --data-cifar100 DIR; "
                         + pkg.cifar_help() + ". Nothing is downloaded.")
    out = {}
    for name, folder in given.items():
        if not folder:
            continue
        try:
            found = pkg.cifar_layout(folder)
            if found is None or found[0].name != name:
                raise pkg.DataError(f"--data-{name} {folder}: not a {CIFAR_SETS[name]} folder; {pkg.cifar_help()}")
            pkg.cifar_folder(folder)
        except pkg.DataError as e:
            raise SystemExit(f"error: {e}") from None
        out[name] = folder
    return out



def labels(args, res: dict) -> dict:
    """How the protocol is labelled in the JSON record."""
    return {"linear": res["protocol"]}


def run(args) -> dict:
    """Pretrain (or find) every data set, arm and seed, then evaluate each by linear probe."""
    roots = [Path(r) for r in args.runs_root]
    protocol_label, reduced = protocol(args)
    model = args.cifar_model
    budget = f"steps{args.pretrain_steps}" if args.pretrain_steps else f"e{args.cifar_epochs}"
    rows = []
    for name, folder in data_folders(args).items():
        lin_data, sub = None, ""
        if args.subset_train or args.subset_val:
            source = pkg.find_data(folder).train.parent
            sub = f"sub{args.subset_train}x{args.subset_val}"
            lin_data = str(eval_subset(source, source.name, args.subset_train, args.subset_val))
        for arm, tag in CIFAR_ARMS.items():
            if arm not in args.cifar_arms:
                continue
            options = ["--config", str(ROOT / "configs" / f"{name}_{tag}_r50.yaml"), "--data", folder,
                       f"model.backbone={CIFAR_BACKBONES[model]}", f"run.epochs={args.cifar_epochs}",
                       *([f"run.max_steps={args.pretrain_steps}"] if args.pretrain_steps else []),
                       *args.pretrain_overrides]
            for seed in args.seeds:
                run_dir = pretrained_run(roots, f"{name}-{tag}-{model}-{budget}", seed, args.collect, options)
                lin, lin_s = linear_eval(run_dir, "mocov3", seed, args.linear_epochs, args.linear_fast, lin_data, sub,
                                         args.eval_overrides)
                rows.append({"data": name, "arm": arm, "seed": seed, **run_record(run_dir),
                             "linear_trained": lin["trained"]["top1"], "linear_random": lin["random_init"]["top1"],
                             "linear_seconds": lin_s, "linear_images": [lin["train_images"], lin["val_images"]]})
                print(f"[accuracy] {name} {arm} seed {seed}: linear {rows[-1]['linear_trained']:.2f} "
                      f"(random init {rows[-1]['linear_random']:.2f})", file=sys.stderr)
    return {"rows": rows, "model": model, "epochs": args.cifar_epochs, "protocol": protocol_label, "reduced": reduced}


def tables(res: dict, args, device: str) -> tuple[str, dict]:
    rows, model, epochs = res["rows"], res["model"], res["epochs"]
    paper = CIFAR_PAPER[(model, epochs)]
    sets = [n for n in CIFAR_SETS if any(r["data"] == n for r in rows)]
    pick = {(n, a): [r for r in rows if r["data"] == n and r["arm"] == a] for n in CIFAR_SETS for a in CIFAR_ARMS}
    agg: dict = {"ours": {}, "gains": {}}
    lines = ["# Accuracy benchmark, preset cifar (SDMP Table 5: CIFAR linear evaluation, MoCo v3, CIFAR-style ResNets)",
             "", f"Seeds {args.seeds}; device {device}; model {model.upper()} ({CIFAR_BACKBONES[model]}); "
             f"protocol: {res['protocol']}.", "",
             f"## Table 5, {model.upper()}, {epochs} epochs: {res['protocol']}", "",
             "| Method | Model | Epochs | " + " | ".join(f"{CIFAR_SETS[n]} paper | {CIFAR_SETS[n]} ours | "
                                                     f"{CIFAR_SETS[n]} ours - paper" for n in CIFAR_SETS) + " |",
             "| --- | --- | --- |" + " --- | --- | --- |" * len(CIFAR_SETS)]
    for method, arm in CIFAR_ROWS.items():
        cells = []
        for k, n in enumerate(CIFAR_SETS):
            ref = paper[method][k]
            rs = pick.get((n, arm), []) if arm else []
            if arm is None:
                cells += [f"{ref} (paper)", "not run (i-mix is not implemented)", ""]
            elif not rs:
                cells += [f"{ref} (paper)", f"n/a (no --data-{n})" if n not in sets else "n/a", ""]
            else:
                ours = [r["linear_trained"] for r in rs]
                agg["ours"][f"{n}:{arm}"] = ours
                cells += [f"{ref} (paper)", mean_std(ours), f"{statistics.mean(ours) - ref:+.2f}"]
        lines.append(f"| {method} | {model.upper()} | {epochs} | " + " | ".join(cells) + " |")
    lines += ["", "Runs (per data set and arm, over seeds):", "",
              "| data | arm | seeds | linear top-1, trained | linear top-1, random init | k-NN trained | "
              "pretrain steps | pretrain images/s | pretrain wall s | linear wall s | device | protocol |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (n, a), rs in pick.items():
        if not rs:
            continue
        knn = [r["knn_trained"] for r in rs if r["knn_trained"] is not None]
        lines.append(f"| {CIFAR_SETS[n]} | {a} | {len(rs)} | {mean_std_of(rs, 'linear_trained')} | "
                     f"{mean_std_of(rs, 'linear_random')} | {mean_std(knn)} | {mean_std_of(rs, 'pretrain_steps')} | "
                     f"{mean_std_of(rs, 'pretrain_images_per_s')} | {mean_std_of(rs, 'pretrain_seconds')} | "
                     f"{mean_std_of(rs, 'linear_seconds')} | {device} | "
                     f"{'reduced' if res['reduced'] else 'paper setting'} |")
    lines += ["", "SDMP minus MoCo v3, paired by seed:", ""]
    for k, n in enumerate(CIFAR_SETS):
        gain = paired_gain(pick[(n, "mocov3")], pick[(n, "mocov3+sdmp")], "linear_trained")
        if gain is None:
            continue
        paper_gain = paper["+ SDMP"][k] - paper["MoCo v3"][k]
        agg["gains"][n] = gain
        lines.append(f"* {CIFAR_SETS[n]}: {mean_std(gain['diffs'])} points over seeds {gain['seeds']} "
                     f"({gain['verdict']} the seed spread, largest arm std {gain['seed_spread']:.2f}); the paper's "
                     f"gain: {paper_gain:+.1f}")
    lines += ["", "The paper gives only the architecture and the epochs for CIFAR; the configs "
              "(configs/cifar{10,100}_mocov3[_sdmp]_r50.yaml) use MoCo v3's ResNet recipe at 32 px.",
              "", f"Generated by `python benchmarks/accuracy.py {' '.join(args.argv)}`."]
    return "\n".join(lines) + "\n", agg


def bars(res: dict, args) -> dict:
    """The PNG's panels: linear and k-NN top-1 per data set and arm, trained and at random init, over seeds."""
    return seed_bars(res["rows"], lambda r: f"{CIFAR_SETS[r['data']]} {r['arm']}",
                     [(f"linear top-1 (%), {res['protocol']}"[:60], "linear"), ("k-NN top-1 (%)", "knn")])
