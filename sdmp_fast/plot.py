"""Training curves of pretraining runs on one PNG.

    python -m sdmp_fast.plot RUN [RUN ...] [--out FILE.png]

Reads each run directory's ``metrics.jsonl``, ``config.yaml`` and (when present) ``knn.json`` and draws, with
step on the x axis: the loss, the method's other loss terms, images/s, the data-wait share (and the device's
idle share on CUDA), lr and momentum, and the final k-NN accuracy (trained against random init) as bars.
Runs are overlaid and labelled by method; runs whose configs differ only in ``run.seed`` (and in settings
that change no result: output folder, logging) are one group, drawn as the mean over seeds with a band of
one standard deviation. :func:`draw` returns the matplotlib figure; :func:`bar_figure` draws grouped bars
with their seed spread (the accuracy and throughput benchmarks' PNGs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from sdmp_fast.cli import command_parser
from sdmp_fast.cli import main as cli_main
from sdmp_fast.config import Config
from sdmp_fast.data.folders import DataError
from sdmp_fast.engine.telemetry import kind
from sdmp_fast.registry import MissingBackend
from sdmp_fast.schema import section_classes

PLOT_EXTRA = "pip install -e '.[plot]' (make setup installs it)"
# keys that do not change what a run computes: runs differing only in these (and the seed) are one group
NOT_RESULTS = ("run.seed", "run.out_dir", "run.stop_after", "run.log_every", "run.checkpoint_minutes")


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), or MissingBackend naming the extra."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingBackend(f"drawing PNGs needs matplotlib ({e}): {PLOT_EXTRA}") from e
    return plt


@dataclass
class Run:
    path: Path
    config: dict  # {"section.key": value}
    lines: list[dict]
    knn: dict | None


def read_run(path: str | Path) -> Run:
    """A run directory's metrics lines, flat config and k-NN report; DataError naming what is missing."""
    path = Path(path)
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise DataError(f"{path}: no metrics.jsonl (not a pretraining run directory, or no step was logged yet)")
    try:
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    except json.JSONDecodeError as e:
        raise DataError(f"{metrics}: not JSON lines ({e})") from None
    if not lines:
        raise DataError(f"{metrics}: empty (no step was logged yet)")
    config = {}
    if (path / "config.yaml").is_file():
        head = [x for x in (path / "config.yaml").read_text().splitlines() if not x.startswith('{"resolved"')]
        config = {f"{s}.{k}": v for s, sec in (yaml.safe_load("\n".join(head)) or {}).items() for k, v in sec.items()}
    knn = json.loads((path / "knn.json").read_text()) if (path / "knn.json").is_file() else None
    return Run(path, config, lines, knn)


def free_keys() -> set[str]:
    """Config keys that alter neither the mathematics nor the data order (field metadata ``resume: free``)."""
    out = set(NOT_RESULTS)
    for name, cls in section_classes(Config).items():
        out |= {f"{name}.{f.name}" for f in fields(cls) if f.metadata.get("resume") == "free"}
    return out


def group_runs(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """[(label, runs)]: runs whose configs differ only in the seed and result-free keys are one group."""
    free = free_keys()
    groups: dict[str, list[Run]] = {}
    for r in runs:
        key = json.dumps({k: v for k, v in r.config.items() if k not in free}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)

    def name(r: Run) -> str:
        c = r.config
        return f"{c.get('method.name', r.path.name)}{' + SDMP' if c.get('sdmp.enabled') else ''}"

    names = [name(rs[0]) for rs in groups.values()]
    out = []
    for (key, rs), base in zip(groups.items(), names):
        label = base
        if names.count(base) > 1:  # same method in two groups: name what differs
            others = [json.loads(k) for k, g in groups.items() if k != key and name(g[0]) == base]
            mine = json.loads(key)
            diff = sorted(k for k in mine if any(o.get(k) != mine[k] for o in others))
            label += " (" + ", ".join(f"{k}={mine[k]}" for k in diff[:3]) + ")" if diff else f" ({rs[0].path.name})"
        seeds = sorted({r.config.get("run.seed") for r in rs}, key=str)
        label += f", {len(rs)} seeds" if len(rs) > 1 else (f", seed {seeds[0]}" if seeds[0] is not None else "")
        out.append((label, rs))
    return out


def series(rs: list[Run], key: str) -> tuple[list[int], list[float], list[float]] | None:
    """(steps, mean, std) of ``key`` over the runs at the steps every run logged it; None if none did."""
    per = [{x["step"]: x[key] for x in r.lines if isinstance(x.get(key), (int, float))} for r in rs]
    steps = sorted(set.intersection(*(set(p) for p in per))) if all(per) else []
    if not steps:
        return None
    mean = [statistics.fmean(p[s] for p in per) for s in steps]
    std = [statistics.stdev([p[s] for p in per]) if len(per) > 1 else 0.0 for s in steps]
    return steps, mean, std


PANELS = (("loss", ("loss",), 1.0), ("loss terms", None, 1.0), ("images/s", ("images_per_s",), 1.0),
          ("data wait (% of time)", ("data_wait_frac", "device_idle_frac"), 100.0), ("lr", ("lr",), 1.0),
          ("momentum", ("momentum",), 1.0))


def panel_keys(groups, title: str, keys) -> list[str]:
    """The keys a panel draws: given ones that some run logged, or (``None``) every loss term but ``loss``."""
    logged = {k for _, rs in groups for r in rs for x in r.lines for k in x}
    if keys is None:
        return sorted(k for k in logged if kind(k) == "loss" and k != "loss")
    return [k for k in keys if k in logged]


def draw(groups: list[tuple[str, list[Run]]]):
    """The figure: one panel per kind of curve (two columns), a line per group and key, seed bands."""
    plt = pyplot()
    panels = [(t, ks, scale) for t, keys, scale in PANELS if (ks := panel_keys(groups, t, keys))]
    with_knn = any(r.knn for _, rs in groups for r in rs)
    n = len(panels) + with_knn
    rows = (n + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.4 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for ax, (title, keys, scale) in zip(axes.flat, panels):
        for g, (label, rs) in enumerate(groups):
            for k, key in enumerate(keys):
                s = series(rs, key)
                if s is None:
                    continue
                steps, mean, std = s
                name = label if len(keys) == 1 else f"{label}: {key}"
                ax.plot(steps, [scale * m for m in mean], styles[k % 4], color=colours[g % len(colours)], label=name)
                if len(rs) > 1:
                    ax.fill_between(steps, [scale * (m - d) for m, d in zip(mean, std)],
                                    [scale * (m + d) for m, d in zip(mean, std)], color=colours[g % len(colours)],
                                    alpha=0.2, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("step")
        if title in ("images/s", "data wait (% of time)"):
            ax.set_ylim(bottom=0)  # a share or a rate: its distance from zero is the point
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if with_knn:
        knn = {label: {name: [r.knn[arm]["top1"] for r in rs if r.knn]
                       for arm, name in (("trained", "trained"), ("random_init", "random init"))}
               for label, rs in groups if any(r.knn for r in rs)}
        bar_panel(axes.flat[len(panels)], "k-NN top-1 (%), end of run", knn)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(", ".join(sorted({str(r.path) for _, rs in groups for r in rs}))[:160], fontsize=8)
    fig.tight_layout()
    return fig


def bar_panel(ax, title: str, data: dict[str, dict[str, list[float]]], ylabel: str = "") -> None:
    """Grouped bars on ``ax``: one group per outer key, one bar per inner key at the mean of its values, with
    a one-standard-deviation error bar where there are several (seeds)."""
    series_names = list(dict.fromkeys(s for d in data.values() for s in d))
    width = 0.8 / max(1, len(series_names))
    top = 0.0
    for i, s in enumerate(series_names):
        xs, means, errs = [], [], []
        for j, d in enumerate(data.values()):
            values = d.get(s) or []
            if values:
                xs.append(j + (i - (len(series_names) - 1) / 2) * width)
                means.append(statistics.fmean(values))
                errs.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        bars = ax.bar(xs, means, width, yerr=errs, capsize=3, label=s)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        top = max([top] + [m + e for m, e in zip(means, errs)])
    ax.set_xticks(range(len(data)), list(data), fontsize=8, rotation=10)
    ax.set_ylim(0, 1.25 * top or 1)  # room for the values and the legend above the bars
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncols=len(series_names), loc="upper right")


def bar_figure(panels: dict[str, dict[str, dict[str, list[float]]]], ylabels: dict[str, str] | None = None,
               title: str = ""):
    """A figure of :func:`bar_panel` s side by side: {panel title: {group: {series: values}}}."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, data) in zip(axes.flat, panels.items()):
        bar_panel(ax, name, data, (ylabels or {}).get(name, ""))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (through a temporary file: never a half-written PNG) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    tmp.replace(path)
    pyplot().close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m sdmp_fast.plot", "Training curves of pretraining runs on one PNG (runs that "
                       "differ only in the seed: mean with a one-std band).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="pretraining run directories (metrics.jsonl, config.yaml)")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    return p


def run(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    groups = group_runs([read_run(r) for r in args.runs])
    path = save(draw(groups), args.out)
    print(f"[plot] wrote {path}: " + "; ".join(f"{label} ({len(rs)} run{'s' if len(rs) > 1 else ''})"
                                               for label, rs in groups), file=sys.stderr)
    return {"out": str(path), "groups": [label for label, _ in groups]}


def main(argv: list[str] | None = None) -> int:
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
