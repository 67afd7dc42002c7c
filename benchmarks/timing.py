"""Shared timing helpers: warm-up, CUDA events (wall clock on CPU), median of N, environment record."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch


def env_record(device: torch.device) -> dict:
    """Machine, versions and commit: stored with every benchmark result."""
    rec = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
    }
    for mod in ("torchvision", "timm", "numpy"):
        try:
            rec[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing package is recorded as such
            rec[mod] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        rec.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
        try:
            rec["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:  # noqa: BLE001
            rec["driver"] = None
        try:
            import triton
            rec["triton"] = triton.__version__
        except Exception:  # noqa: BLE001
            rec["triton"] = None
    try:
        rec["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           timeout=10, cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:  # noqa: BLE001
        rec["git_commit"] = None
    return rec


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 2, iters: int = 5) -> dict:
    """Median seconds per call of ``fn`` after ``warmup`` calls (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "iters": iters, "warmup": warmup}


def time_loop(fn: Callable[[], object], device: torch.device, warmup: int = 2, steps: int = 5,
              repeats: int = 3) -> dict:
    """Median seconds per call over ``repeats`` runs of ``steps`` back-to-back calls, after ``warmup`` calls.

    One synchronisation per run, as in a training loop that reads the device every N steps: the host runs
    ahead of the device inside a run, so launch overhead is hidden where the device is the bottleneck and
    counted where the host is (which is what CUDA graphs remove). ``time_fn`` syncs after every call instead.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    per_call = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        per_call.append((time.perf_counter() - t) / steps)
    return {"median_s": statistics.median(per_call), "min_s": min(per_call), "steps": steps, "repeats": repeats,
            "warmup": warmup}


RESULTS = Path("runs") / "benchmarks"  # where results go unless --json / --results names a file to commit


def result_path(given: str | None, name: str) -> Path:
    """``given`` (the user's --json / --results), else ``runs/benchmarks/<name>`` under the current folder: a
    benchmark never writes over a tracked result unless told to."""
    return Path(given) if given else RESULTS / name


def write_json(path: str | Path, record: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)
    return path
