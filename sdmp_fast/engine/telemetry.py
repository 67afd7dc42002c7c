"""Data-stall telemetry of the training loop, and the run's scalars in TensorBoard.

Host figure (every device): the time the loop was blocked in the loader's ``next()`` (which includes the
loader's hand-off of the batch to the training device), per logged interval: ``data_wait_s``, the rest of
the interval ``step_s``, and ``data_wait_frac`` = wait / interval wall time.

Device figure (CUDA): the host runs ahead of the device, so a host wait can overlap device work (and a DALI
output can wait behind training kernels, which shows up as host wait although the device is busy). Two
events per step on the training stream, recorded before and after the step is enqueued, give the device's
time between the end of one step and the start of the next (``device_idle_s``: idle, or busy with the
loader's own device work) and in the steps (busy); ``device_idle_frac`` = idle / (idle + busy). Events are
only recorded in the step and read at the logging point, after the loop's one host synchronisation: no new
sync. :class:`HostClock` is the same arithmetic with host timestamps (the CPU twin the tests exercise).

Several ranks: each figure is the mean over ranks, and the waits also the maximum (``*_max``): one slow rank
stalls every other at the next collective, and a mean hides it.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from sdmp_fast import dist
from sdmp_fast.registry import MissingBackend

TB_EXTRA = "pip install -e '.[tb]' (make setup installs it)"
# metrics.jsonl keys by kind (TensorBoard's tag groups, the plot's panels); method values not named here are
# loss terms
BOOKKEEPING = ("step", "epoch", "time", "elapsed_s")
SCHEDULE = ("lr", "momentum", "weight_decay", "teacher_temp")
SPEED = ("images_per_s", "data_wait_s", "data_wait_s_max", "data_wait_frac", "data_wait_frac_max", "step_s",
         "device_idle_s", "device_idle_frac", "device_idle_frac_max")
MONITORS = ("lam_eff", "t_entropy", "s_entropy")


def kind(key: str) -> str:
    """The group of a metrics key: bookkeeping, schedule, speed, monitor, knn or loss."""
    for name, keys in (("bookkeeping", BOOKKEEPING), ("schedule", SCHEDULE), ("speed", SPEED),
                       ("monitor", MONITORS)):
        if key in keys:
            return name
    return "knn" if key.startswith("knn_") else "loss"


# ----------------------------------------------------------------------------- clocks


class HostClock:
    """Marks are host timestamps: on a CPU the step runs synchronously, so the host's clock is the device's."""

    def mark(self) -> float:
        return time.perf_counter()

    def settle(self, mark) -> None:
        pass

    def seconds(self, a, b) -> float:
        return b - a


class CudaClock:
    """Marks are CUDA events on the current stream (recording one is asynchronous)."""

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def settle(self, mark: torch.cuda.Event) -> None:
        # called after the logging point's read, which waited for this stream: returns at once
        mark.synchronize()

    def seconds(self, a: torch.cuda.Event, b: torch.cuda.Event) -> float:
        return a.elapsed_time(b) / 1000.0


# ----------------------------------------------------------------------------- the meter


class StallMeter:
    """Host wait for batches and (with a ``clock``) the device's gaps between steps, per logged interval."""

    def __init__(self, clock: HostClock | CudaClock | None = None):
        self.clock = clock
        self.wait = 0.0
        self.marks: list[tuple[Any, Any]] = []  # (start, end) of each step of this interval
        self.prev_end = None  # the last step's end mark of the previous interval
        self.totals: list[dict[str, float]] = []  # per rank: the sums over the run

    def batches(self, loader: Iterable) -> Iterator:
        """``loader``'s batches, counting the time spent waiting for each (starting the iteration included)."""
        t = time.perf_counter()
        it = iter(loader)
        try:
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    self.wait += time.perf_counter() - t
                    return
                self.wait += time.perf_counter() - t
                yield batch
                t = time.perf_counter()
        finally:  # left early (end of the run, a profile arm): the loader's iteration ends here, not at collection
            if hasattr(it, "close"):
                it.close()

    def step(self, fn: Callable, *args):
        """``fn(*args)`` between two clock marks (nothing is read)."""
        if self.clock is None:
            return fn(*args)
        start = self.clock.mark()
        out = fn(*args)
        self.marks.append((start, self.clock.mark()))
        return out

    def own_figures(self, seconds: float) -> dict[str, float]:
        """This rank's sums over the interval of ``seconds`` wall time (after the host sync of the logging point)."""
        fig = {"seconds": seconds, "wait": self.wait}
        if self.clock is not None and self.marks:
            c = self.clock
            c.settle(self.marks[-1][1])
            ends = [self.prev_end] + [end for _, end in self.marks[:-1]]
            fig["idle"] = sum(c.seconds(e, s) for e, (s, _) in zip(ends, self.marks) if e is not None)
            fig["busy"] = sum(c.seconds(s, e) for s, e in self.marks)
            self.prev_end = self.marks[-1][1]
        self.wait, self.marks = 0.0, []
        return fig

    def interval(self, seconds: float) -> dict[str, float]:
        """The metrics-line figures of the interval just logged (a collective with several ranks)."""
        ranks = dist.all_gather_object(self.own_figures(seconds))  # [this rank's] in one process
        if not self.totals:
            self.totals = [{} for _ in ranks]
        for total, fig in zip(self.totals, ranks):
            for k, v in fig.items():
                total[k] = total.get(k, 0.0) + v
        return summarise(ranks)

    def run_figures(self) -> dict[str, float]:
        """The same figures over every logged interval of this invocation (empty before the first)."""
        return summarise(self.totals) if self.totals else {}


def summarise(ranks: list[dict[str, float]]) -> dict[str, float]:
    """Line figures from per-rank sums: means over ranks, and with several ranks the maxima of the waits."""
    def mean(xs):
        return sum(xs) / len(xs)
    wait = [r["wait"] for r in ranks]
    frac = [r["wait"] / max(r["seconds"], 1e-9) for r in ranks]
    out = {"data_wait_s": mean(wait), "step_s": mean([r["seconds"] - r["wait"] for r in ranks]),
           "data_wait_frac": mean(frac)}
    if len(ranks) > 1:
        out.update(data_wait_s_max=max(wait), data_wait_frac_max=max(frac))
    if all("idle" in r for r in ranks):
        idle = [r["idle"] / max(r["idle"] + r["busy"], 1e-9) for r in ranks]
        out.update(device_idle_s=mean([r["idle"] for r in ranks]), device_idle_frac=mean(idle))
        if len(ranks) > 1:
            out["device_idle_frac_max"] = max(idle)
    return out


def meter_for(device: torch.device) -> StallMeter:
    """The run's meter: device events on CUDA, the host wait alone elsewhere."""
    return StallMeter(CudaClock(device) if device.type == "cuda" else None)


def postfix(fig: dict[str, float]) -> dict[str, str]:
    """Progress-bar fields: ``wait=12%`` (and ``idle=3%`` with a device figure)."""
    out = {"wait": f"{fig['data_wait_frac']:.0%}"} if "data_wait_frac" in fig else {}
    if "device_idle_frac" in fig:
        out["idle"] = f"{fig['device_idle_frac']:.0%}"
    return out


# ----------------------------------------------------------------------------- the end-of-run line


def loader_workers(cfg) -> str:
    """``dali, 4 threads``: the loader and the parallelism it was given (from the config)."""
    d = cfg.data
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if d.loader == "dali":
        return f"dali, {d.dali_threads or cores} threads"
    if d.loader == "torch":
        return f"torch, {d.num_workers} worker processes" if d.num_workers else "torch, in the main process"
    if d.loader == "ffcv":
        return f"ffcv, {d.num_workers or cores} threads"
    if d.loader == "nvjpeg":
        return f"nvjpeg, {d.prefetch} batches prefetched"
    return d.loader


def wait_phrase(fig: dict[str, float], cfg) -> str:
    """``waited for data 23% of the time (dali, 4 threads)``, with the slowest rank's and the device's figures."""
    if "data_wait_frac" not in fig:
        return "no logged step to measure data waits"
    text = f"waited for data {fig['data_wait_frac']:.0%} of the time ({loader_workers(cfg)}"
    if "data_wait_frac_max" in fig:
        text += f"; slowest rank {fig['data_wait_frac_max']:.0%}"
    text += ")"
    if "device_idle_frac" in fig:
        text += f", device idle {fig['device_idle_frac']:.0%} between steps"
    return text


# ----------------------------------------------------------------------------- TensorBoard


def knn_scalars(knn: dict) -> dict[str, float]:
    """knn.json's accuracies as metrics keys: ``knn_trained_top1``, ``knn_random_init_top5``..."""
    return {f"knn_{arm}_{k}": v for arm in ("trained", "random_init") for k, v in knn.get(arm, {}).items()
            if isinstance(v, (int, float))}


def summary_writer_class():
    """torch.utils.tensorboard.SummaryWriter, or MissingBackend naming the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise MissingBackend(f"run.tensorboard = true needs the tensorboard package ({e}): {TB_EXTRA}; "
                             "or set run.tensorboard=false") from e
    return SummaryWriter


class Board:
    """``run.tensorboard``: every numeric value of a metrics line as a scalar under RUN_DIR/tensorboard (rank 0;
    a no-op elsewhere and when off). ``purge_step``: a resumed run drops the earlier events from that step on."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None):
        self.writer = None
        if enabled:
            writer = summary_writer_class()  # every rank checks, so none starts without it
            if dist.is_main():
                self.writer = writer(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge_step or None)

    def write(self, line: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in line.items():
            group = kind(key)
            if group == "bookkeeping" and key != "epoch":
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{'train' if group == 'bookkeeping' else group}/{key}", value,
                                       line["step"], walltime=line.get("time"))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
