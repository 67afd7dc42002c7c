"""k-NN accuracy of the default run with and without SDMP over several seeds (mean +- std).

    python benchmarks/knn_seeds.py [--seeds 0 1 2] [--out runs/knn_seeds] [--collect] [extra key=value ...]

Each arm is the default run (``python -m sdmp_fast.pretrain``: tiny ViT, Fashion-MNIST, the same
step budget) with ``sdmp.enabled`` true or false; every run also reports the same backbone at random
initialisation. ``--collect`` only reads finished run directories. Writes a JSON record and a
Markdown table (default: docs/results/knn_seeds.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import env_record, write_json  # noqa: E402

ARMS = {"mocov3": ["sdmp.enabled=false"], "mocov3+sdmp": ["sdmp.enabled=true"]}


def _stats(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.2f}" if xs else "n/a"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/knn_seeds")
    p.add_argument("--collect", action="store_true", help="read finished runs only")
    p.add_argument("--results", default="docs/results/knn_seeds")
    p.add_argument("overrides", nargs="*", help="extra config overrides applied to both arms")
    args = p.parse_args(argv)
    import torch
    from sdmp_fast.pretrain import run
    rows = []
    for arm, arm_overrides in ARMS.items():
        for seed in args.seeds:
            out = Path(args.out) / f"{arm.replace('+', '_')}-s{seed}"
            if not args.collect and not (out / "knn.json").is_file():
                t0 = time.time()
                run(["--out", str(out), f"run.seed={seed}", *arm_overrides, *args.overrides], progress=False)
                print(f"{arm} seed {seed}: {time.time() - t0:.0f} s", file=sys.stderr)
            knn = json.loads((out / "knn.json").read_text())
            summary = json.loads((out / "summary.json").read_text())
            rows.append({"arm": arm, "seed": seed, "trained_top1": knn["trained"]["top1"],
                         "random_init_top1": knn["random_init"]["top1"], "train_seconds": summary["seconds"],
                         "images_per_s": summary["images_per_s"], "steps": summary["steps"], "run": str(out)})
    table = ["| arm | seeds | k-NN top-1 trained | k-NN top-1 random init | train time (s) |",
             "| --- | --- | --- | --- | --- |"]
    agg = {}
    for arm in ARMS:
        r = [x for x in rows if x["arm"] == arm]
        agg[arm] = {"trained_mean": statistics.mean(x["trained_top1"] for x in r),
                    "trained_std": statistics.stdev(x["trained_top1"] for x in r) if len(r) > 1 else 0.0}
        table.append(f"| {arm} | {len(r)} | {_stats([x['trained_top1'] for x in r])} | "
                     f"{_stats([x['random_init_top1'] for x in r])} | {_stats([x['train_seconds'] for x in r])} |")
    record = {"env": env_record(torch.device("cpu")), "overrides": args.overrides, "runs": rows, "aggregate": agg}
    write_json(Path(args.results).with_suffix(".json"), record)
    Path(args.results).with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return record


if __name__ == "__main__":
    main()
