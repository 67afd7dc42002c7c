"""``e2e``: real training (``sdmp_fast.pretrain``: config, loader, method, Trainer.fit) of MoCo v3 + SDMP for
``--e2e-steps`` steps after ``--e2e-warmup`` steps with each loader (``synthetic``: the compute-only ceiling),
the rate read from the run's metrics.jsonl windows after the warm-up, and each loader's rate as a fraction of
synthetic's (GPU target: dali >= 0.9). Loaders that cannot run here are listed with the reason."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import package as pkg
from benchmarks.sections.common import LATE, Context, failed, free_device, image_source, past

E2E_ORDER = ("synthetic", "torch", "dali", "nvjpeg", "ffcv")  # then any other registered loader
ROOT = Path(__file__).resolve().parents[2]


class Skipped(Exception):
    """A loader that cannot run here (its data needs a package that is missing); the message is the row's status."""


def replicate_folder(src: Path, dst: Path, n: int) -> tuple[Path, int]:
    """(folder, files): ``dst/<class>_r<k>/`` hard links (copies across file systems) of ``src``'s images until there
    are at least ``n``: an epoch long enough for the measured steps without generating that many distinct JPEGs."""
    files = sorted(f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"{src}: no JPEG files to replicate")
    copies = max(1, math.ceil(n / len(files)))
    for k in range(copies):
        for f in files:
            out = dst / f"{f.parent.name}_r{k}" / f.name
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, out)
            except OSError:
                shutil.copyfile(f, out)
    return dst, copies * len(files)


def e2e_rate(metrics: Path, warmup: int, batch: int) -> dict:
    """images/s between the log point at the end of the warm-up and the last one (run.log_every = warm-up steps), from
    the run's metrics.jsonl: the loader's prefetching, the step and the periodic log read all count; the final
    checkpoint is written after the last log point and does not."""
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    after = [x for x in lines if x["step"] >= warmup]
    if len(after) < 2:
        raise RuntimeError(f"{metrics}: fewer than two log points after the warm-up ({len(lines)} lines)")
    a, b = after[0], after[-1]
    return {"images_per_s": round((b["step"] - a["step"]) * batch / max(b["elapsed_s"] - a["elapsed_s"], 1e-9), 1),
            "window_images_per_s": [round(x["images_per_s"], 1) for x in after[1:]],
            "warmup_images_per_s": round(lines[0]["images_per_s"], 1), "measured_steps": b["step"] - a["step"]}


class TrainingData:
    """The image folder (and its .beton) the folder-reading loaders train on: made on first need, then shared."""

    def __init__(self, work: Path, data: str | None, unique_images: int, images_needed: int, workers: int):
        self.work, self.data, self.unique, self.needed, self.workers = work, data, unique_images, images_needed, workers
        self.folder: Path | None = None
        self.source = ""
        self.beton: Path | None = None

    def argv(self, name: str) -> tuple[list[str], list[str], str]:
        """(pretrain flags, key=value overrides that point loader ``name`` at the data, the data's description)."""
        if name in pkg.folderless_loaders():
            return [], [], "random tensors on device (compute-only ceiling)"
        if self.folder is None:
            if self.data is not None:
                _, self.folder, self.source = image_source(self.data, self.unique)
            else:
                _, src, desc = image_source(None, self.unique)
                self.folder, n = replicate_folder(src, self.work / "images", self.needed)
                self.source = f"{desc}, hard-linked into {n} files (one epoch covers the run)"
        flags = ["--data", str(self.folder)]
        if name != "ffcv":
            return flags, [], self.source
        if importlib.util.find_spec("ffcv") is None:
            raise Skipped("skipped: ffcv is not installed (pip install -e .[ffcv]); it reads a .beton written by "
                          "ffcv's writer")
        if self.beton is None:
            self.beton = self.work / "train.beton"
            pkg.write_beton(self.folder, self.beton, workers=self.workers, cache_dir=str(self.work / "cache"))
        return flags, [f"data.beton={self.beton}"], (f"{self.source}; as a .beton (loaders.write_beton defaults: "
                                                     "max-resolution 400, jpg)")


def e2e_overrides(device: torch.device, work: Path, overrides: list[str], batch: int, workers: int, warmup: int,
                  stop: int) -> list[str]:
    """key=value of every loader's run: MoCo v3 + SDMP, a log point every ``warmup`` steps, stopping after step
    ``stop``, no k-NN and no checkpoint on the way."""
    return [*overrides, f"run.device={device}", f"data.batch_size={batch}", f"data.num_workers={workers}",
            f"data.dali_threads={workers}", f"data.cache_dir={work / 'cache'}", "method.name=mocov3",
            "sdmp.enabled=true", "run.knn=false", "run.checkpoint_minutes=0", f"run.log_every={warmup}",
            f"run.stop_after={stop}", f"run.max_steps={max(100_000, stop)}"]


def each_loader(names: list[str], base: dict, train_data: TrainingData, device: torch.device, measure,
                failures: list[str], deadline: float | None, label: str = "e2e", on_row=None) -> list[dict]:
    """One row per loader: ``base``, then ``measure(name, flags, data_keys)``'s figures with status ok, or the reason it
    did not run (unknown, past the deadline, a missing package, a failure: the other loaders still run). ``on_row``
    (section, row) is called as soon as a loader's row is measured, so a crash or kill keeps it."""
    registered = pkg.loader_registry()
    rows = []
    for name in names:
        row = {"loader": name, **base}
        if name not in registered:
            rows.append({**row, "status": f"unknown loader {name!r}; registered: {', '.join(registered.names())}"})
            continue
        if past(deadline):
            rows.append({**row, "status": LATE})
            continue
        t0 = time.perf_counter()
        try:
            flags, data_keys, row["source"] = train_data.argv(name)
            row.update(status="ok", **measure(name, flags, data_keys), wall_s=round(time.perf_counter() - t0, 1))
        except Skipped as e:
            row.update(source=train_data.source, status=str(e))
        except pkg.MissingBackend as e:
            row["status"] = f"skipped: {e}"
        except (Exception, SystemExit) as e:  # noqa: BLE001 - one failed loader is reported; the others still run
            row["status"] = failed(f"{label} {name}", e, failures)
        finally:
            free_device(device)
        rows.append(row)
        if on_row is not None:
            on_row(label, row)
        print(f"  {label} {name:9s} {row.get('images_per_s', '-')} img/s ({row['status']})", file=sys.stderr)
    return rows


def bench_e2e(device: torch.device, names: list[str], data: str | None, unique_images: int, batch: int,
              config: str | None, overrides: list[str], warmup: int, steps: int, workers: int,
              failures: list[str], deadline: float | None = None, on_row=None) -> list[dict]:
    """MoCo v3 + SDMP trained by ``sdmp_fast.pretrain`` (``--config config``, then ``overrides``) with each
    loader: images/s after the warm-up, and each loader's rate as a fraction of the synthetic (compute-only) rate."""
    warmup = max(1, warmup)
    stop = warmup + max(1, math.ceil(steps / warmup)) * warmup  # log points at every warm-up multiple
    work = tempfile.TemporaryDirectory()
    train_data = TrainingData(Path(work.name), data, unique_images, (stop + 1) * batch, workers)
    keys = e2e_overrides(device, Path(work.name), overrides, batch, workers, warmup, stop)

    def measure(name: str, flags: list[str], data_keys: list[str]) -> dict:
        summary = pkg.run_pretrain(["--loader", name, "--out", str(Path(work.name) / f"run-{name}"),
                                    *(["--config", config] if config else []), *flags, *keys, *data_keys])
        return {**e2e_rate(Path(summary["out_dir"]) / "metrics.jsonl", warmup, batch),
                "fit_images_per_s": summary["images_per_s"], "workers": workers}

    rows = each_loader(names, {"method": "mocov3+sdmp", "batch": batch, "warmup_steps": warmup}, train_data, device,
                       measure, failures, deadline, on_row=on_row)
    synthetic = next((r["images_per_s"] for r in rows if r["loader"] == "synthetic" and r["status"] == "ok"), None)
    for r in rows:
        if r["status"] == "ok" and synthetic:
            r["fraction_of_synthetic"] = round(r["images_per_s"] / synthetic, 3)
    work.cleanup()
    return rows


def e2e_job(ctx: Context) -> dict:
    """The job the e2e and input sections train: loader names, config, batch, overrides, warm-up, steps, workers
    (``--e2e-*`` options over the defaults: the ViT-S/16 recipe at 224 px on a GPU, the tiny ViT elsewhere)."""
    args = ctx.args
    registered = pkg.loader_registry()
    names = ([n.strip() for n in args.e2e_loaders.split(",") if n.strip()] if args.e2e_loaders else
             [n for n in E2E_ORDER if n in registered] + [n for n in registered.names() if n not in E2E_ORDER])
    if ctx.gpu and not args.quick:
        config = str(ROOT / "configs" / "mocov3_sdmp_vit_s.yaml")
        batch, overrides, (warmup, steps) = 128, [], (10, 30)
        workers = os.cpu_count() or args.workers
    else:
        batch, config = (16 if args.quick else 64), None
        overrides = ["model.backbone=vit_tiny_p4", "data.image_size=32",
                     f"method.hidden_dim={256 if args.quick else 1024}"]
        warmup, steps = (2, 4) if args.quick else (4, 12)
        workers = args.workers
    return {"names": names, "config": config, "batch": args.e2e_batch or batch, "overrides": overrides,
            "warmup": args.e2e_warmup or warmup, "steps": args.e2e_steps or steps,
            "workers": args.e2e_workers if args.e2e_workers is not None else workers,
            "images": 16 if args.quick else args.images}


def run(ctx: Context) -> None:
    j = e2e_job(ctx)
    ctx.results["e2e"] = bench_e2e(ctx.device, j["names"], ctx.args.data, j["images"], j["batch"], j["config"],
                                   j["overrides"], j["warmup"], j["steps"], j["workers"], ctx.failures, ctx.deadline,
                                   ctx.progress)
