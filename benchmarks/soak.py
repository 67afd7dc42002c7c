"""Soak benchmark: minutes of real training with each loader, watching memory and speed over time.

    python benchmarks/soak.py [--minutes 2] [--loaders torch,dali,nvjpeg,ffcv,synthetic] [--device auto]
                              [--config FILE] [key=value ...] [--json PATH]

Per loader: the default run (MoCo v3 + SDMP, tiny ViT, embedded Fashion-MNIST at 32 px; ``--config`` and
overrides change it) trains with ``Trainer.train_step`` for ``--minutes``, epoch after epoch, while the host
RSS of this process and its children (the torch loader's workers) and, on a GPU, the allocated and reserved
device memory are sampled every ``--every`` seconds with the images/s of that window. The ffcv loader reads a
``.beton`` of the same training split, written once into the cache. Reported per loader: the samples, the
RSS after warm-up (the first ``--warmup`` fraction of the time) and at the end, their difference (the
target is no growth after warm-up: DALI users report memory growth), and the first and last windows'
images/s (drift). Results are printed and written as JSON with the environment record (default
runs/benchmarks/soak-<device>.json; a result to commit: ``--json benchmarks/results/NAME.json``).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import package as pkg  # noqa: E402
from benchmarks.package import HelpFormatter  # noqa: E402
from benchmarks.timing import env_record, result_path, sync, write_json  # noqa: E402

BACKENDS = {"dali": "nvidia.dali", "ffcv": "ffcv"}


def rss_mib() -> float:
    """Resident memory of this process and all its children, MiB."""
    import psutil
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # a worker that just exited
            pass
    return total / 2**20


def loader_setup(cfg, loader_name: str, out_dir: Path):
    """(config, split) loader ``loader_name`` trains on: the run's training split, for ffcv as a .beton of it
    (written once into ``out_dir``); the synthetic loader reads none."""
    if loader_name == "synthetic":
        return cfg, None
    split = pkg.training_split(cfg)
    if loader_name != "ffcv":
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, loader=loader_name)), split
    beton = out_dir / f"soak-{len(split)}.beton"
    if not beton.is_file():
        pkg.write_beton(split.root, beton, progress=True)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, loader="ffcv", beton=str(beton))), None


def sample_row(t0: float, t_win: float, n_win: int, step: int, device: torch.device) -> tuple[dict, float]:
    """(one sample: time, the window's images/s, host RSS and, on a GPU, device memory; the time it was taken)."""
    sync(device)
    now = time.time()
    row = {"t_s": round(now - t0, 1), "images_per_s": round(n_win / (now - t_win), 1),
           "rss_mib": round(rss_mib(), 1), "step": step}
    if device.type == "cuda":
        row.update(cuda_allocated_mib=round(torch.cuda.memory_allocated(device) / 2**20, 1),
                   cuda_reserved_mib=round(torch.cuda.memory_reserved(device) / 2**20, 1))
    return row, now


def train_and_sample(trainer, ld, device: torch.device, name: str, minutes: float, every: float) -> tuple[list, int]:
    """(samples, epochs started): train epoch after epoch for ``minutes``, one sample every ``every`` seconds."""
    samples, t0 = [], time.time()
    t_win, n_win, epoch = t0, 0, 0
    deadline = t0 + 60 * minutes
    while True:
        ld.set_epoch(epoch)
        for batch in ld:
            trainer.train_step(batch.views)
            n_win += batch.size
            now = time.time()
            if now - t_win >= every or now >= deadline:
                row, t_win = sample_row(t0, t_win, n_win, trainer.step, device)
                samples.append(row)
                print(f"  {name:9s} {json.dumps(row)}", file=sys.stderr)
                n_win = 0
                if t_win >= deadline:
                    return samples, epoch + 1
        epoch += 1


def soak_one(cfg, loader_name: str, device: torch.device, minutes: float, every: float, warmup: float,
             out_dir: Path) -> dict:
    """Train with ``loader_name`` for ``minutes`` and summarise memory and speed after the warm-up fraction."""
    cfg, split = loader_setup(cfg, loader_name, out_dir)
    # schedules long enough for any soak (a table of 10^6 steps), never ending inside it
    trainer, ld, _, _ = pkg.build_trainer(cfg, loader_name, device, out_dir / loader_name, split, total_steps=10**6)
    samples, epochs = train_and_sample(trainer, ld, device, loader_name, minutes, every)
    after = [s for s in samples if s["t_s"] >= warmup * 60 * minutes] or samples
    out = {"loader": loader_name, "minutes": minutes, "steps": trainer.step, "epochs_started": epochs,
           "rss_after_warmup_mib": after[0]["rss_mib"], "rss_end_mib": samples[-1]["rss_mib"],
           "rss_growth_after_warmup_mib": round(samples[-1]["rss_mib"] - after[0]["rss_mib"], 1),
           "rss_max_after_warmup_mib": max(s["rss_mib"] for s in after),
           "images_per_s_first_window": samples[0]["images_per_s"],
           "images_per_s_last_window": samples[-1]["images_per_s"],
           "images_per_s_mean_after_warmup": round(sum(s["images_per_s"] for s in after) / len(after), 1),
           "samples": samples}
    if device.type == "cuda":
        out["cuda_reserved_growth_after_warmup_mib"] = round(samples[-1]["cuda_reserved_mib"]
                                                             - after[0]["cuda_reserved_mib"], 1)
    del trainer, ld
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/soak.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0, help="training time per loader, in minutes")
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=0.25, help="fraction of the time treated as warm-up")
    p.add_argument("--loaders", default="torch,dali,nvjpeg,ffcv,synthetic",
                   help="comma list of the loaders to soak, one after the other (those not installed are skipped)")
    p.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--config", default=None, help="pretraining config file changing the default run")
    p.add_argument("--json", default=None, help="write the results here (default: runs/benchmarks/soak-<device>.json; "
                                                "a result to commit: --json benchmarks/results/NAME.json)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides of the default run")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    cfg = pkg.load_config(args.config, ["run.knn=false", *args.overrides])
    device = pkg.pick_device(args.device)
    names = [n.strip() for n in args.loaders.split(",") if n.strip()]
    missing = [n for n in names if n in BACKENDS and importlib.util.find_spec(BACKENDS[n]) is None]
    if missing:
        print(f"[soak] skipping {missing}: not installed", file=sys.stderr)
    out_dir = pkg.default_cache_dir(cfg.data.cache_dir) / "soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"env": env_record(device), "config": {"overrides": args.overrides, "config": args.config},
              "results": []}
    print(json.dumps(result["env"]))
    for name in names:
        if name in missing:
            continue
        r = soak_one(cfg, name, device, args.minutes, args.every, args.warmup, out_dir)
        result["results"].append(r)
        print(f"[soak] {name}: RSS {r['rss_after_warmup_mib']} -> {r['rss_end_mib']} MiB after warm-up "
              f"({r['rss_growth_after_warmup_mib']:+} MiB), images/s {r['images_per_s_first_window']} -> "
              f"{r['images_per_s_last_window']}", file=sys.stderr)
    path = result_path(args.json, f"soak-{device.type}.json")
    write_json(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
