"""What the accuracy presets share: finding or training a run, reading what it reports, linear evaluation,
class-balanced evaluation subsets, and the paired SDMP-minus-baseline difference over seeds."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from benchmarks import package as pkg

ROOT = Path(__file__).resolve().parents[2]


def mean_std(xs: list[float]) -> str:
    """"mean ± std" of ``xs`` with two decimals; the value alone for one, "n/a" for none."""
    if not xs:
        return "n/a"
    return f"{xs[0]:.2f}" if len(xs) == 1 else f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def mean_std_of(rows: list[dict], key: str) -> str:
    return mean_std([r[key] for r in rows])


def subset_folder(source: Path, out: Path, per_class_train: int, per_class_val: int) -> Path:
    """A class-balanced subset of ``source`` (train/ and val/) as symbolic links: the first N files per class."""
    done = out / ".complete"
    if done.is_file():
        return out
    for part, n in (("train", per_class_train), ("val", per_class_val)):
        split = pkg.scan_folder(source / part)[0]
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


def eval_subset(source: Path, name: str, per_class_train: int, per_class_val: int) -> Path:
    """``subset_folder`` of ``source``, kept in the cache as ``accuracy-subset-<name>-<train>-<val>``."""
    out = pkg.default_cache_dir() / f"accuracy-subset-{name}-{per_class_train}-{per_class_val}"
    return subset_folder(source, out, per_class_train, per_class_val)


def find_run(roots: list[Path], tag: str, seed: int) -> Path | None:
    """The first ``<root>/<tag>-s<seed>`` that holds a finished run (its ``backbone.pt``)."""
    for r in roots:
        d = r / f"{tag}-s{seed}"
        if (d / "backbone.pt").is_file():
            return d
    return None


def evaluate(command, result: Path, argv: list[str]) -> dict:
    """Run an evaluation command (in-process) unless its result file exists; ``--resume auto`` continues a
    partial one."""
    if result.is_file():
        return json.loads(result.read_text())
    return command([*argv, "--resume", "auto"])


def pretrained_run(roots: list[Path], tag: str, seed: int, collect: bool, options: list[str]) -> Path:
    """The finished run ``<tag>-s<seed>`` under ``roots``; pretrained into ``roots[0]`` with ``options`` (config,
    data, overrides) and ``run.seed=seed`` when there is none, unless ``collect`` (then it is an error)."""
    run_dir = find_run(roots, tag, seed)
    if run_dir is None:
        if collect:
            raise SystemExit(f"error: --collect: no finished run {tag}-s{seed} under {', '.join(map(str, roots))}")
        run_dir = roots[0] / f"{tag}-s{seed}"
        pkg.run_pretrain(["--out", str(run_dir), *options, f"run.seed={seed}"])  # options: flags, then key=value
    return run_dir


def run_record(run_dir: Path) -> dict:
    """What a pretraining run reports: its steps, wall time and images/s, and its k-NN monitor (when it ran)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    knn = json.loads((run_dir / "knn.json").read_text()) if (run_dir / "knn.json").is_file() else None
    return {"run": str(run_dir), "pretrain_steps": summary["steps"], "pretrain_seconds": summary["seconds"],
            "pretrain_images_per_s": summary["images_per_s"],
            "knn_trained": knn["trained"]["top1"] if knn else None,
            "knn_random": knn["random_init"]["top1"] if knn else None}


def linear_eval(run_dir: Path, protocol: str, seed: int, epochs: int, cached: bool, data: str | None, tag: str,
                overrides: list[str]) -> tuple[dict, float]:
    """``sdmp_fast.linear`` on a run (result read back when its directory, named by the settings, has one);
    returns (result, seconds)."""
    out = run_dir / "accuracy" / f"linear{'_fast' if cached else ''}-{protocol}-e{epochs}{'-' + tag if tag else ''}"
    argv = ["--pretrained", str(run_dir), "--protocol", protocol, "--out", str(out), f"run.seed={seed}",
            f"run.epochs={epochs}", *(["--cached-features"] if cached else []), *(["--data", data] if data else [])]
    t0 = time.time()
    return evaluate(pkg.run_linear, out / "linear.json", [*argv, *overrides]), round(time.time() - t0, 1)


def paired_gain(base: list[dict], sdmp: list[dict], key: str) -> dict | None:
    """SDMP minus baseline of ``key`` per common seed, the larger seed std of the two arms, and whether the mean
    difference exceeds it (with at least two seeds)."""
    pa, pb = {r["seed"]: r[key] for r in base}, {r["seed"]: r[key] for r in sdmp}
    seeds = sorted(set(pa) & set(pb))
    if not seeds:
        return None
    diffs = [pb[s] - pa[s] for s in seeds]
    spread = max(statistics.stdev(list(pa.values())) if len(pa) > 1 else 0.0,
                 statistics.stdev(list(pb.values())) if len(pb) > 1 else 0.0)
    verdict = "exceeds" if len(diffs) > 1 and abs(statistics.mean(diffs)) > spread else "does not exceed"
    return {"seeds": seeds, "diffs": diffs, "seed_spread": spread, "verdict": verdict}


def seed_bars(rows: list[dict], group, metrics: list[tuple[str, str]]) -> dict:
    """{panel title: {group(row): {"trained": values, "random init": values}}} over seeds, for each (title, key) of
    ``metrics`` (the row columns ``<key>_trained`` and ``<key>_random``): the accuracy PNG beside the tables."""
    out = {}
    for title, key in metrics:
        panel: dict = {}
        for r in rows:
            bars = panel.setdefault(group(r), {"trained": [], "random init": []})
            for series, column in (("trained", f"{key}_trained"), ("random init", f"{key}_random")):
                if r.get(column) is not None:
                    bars[series].append(r[column])
        if any(v for bars in panel.values() for v in bars.values()):
            out[title] = panel
    return out
