"""``doctor --config X --data D [--loader L]``: a planned run checked before it starts.

The data read by the run's own loader, the output folder writable, free disk and ``/dev/shm``, and one real
training step at the configured batch on the run's device. The loader and its first batch are built once and
shared by the checks.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import torch

from loaders import LOADERS
from sdmp_fast.config import Config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.models import build_backbone

GiB = 2**30
MIN_DISK = 2 * GiB   # a few checkpoints of the small models; the check also counts the configured model
MIN_SHM = GiB // 4   # DataLoader workers and DALI pass batches through /dev/shm (Docker's default is 64 MiB)


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


class PlannedRun:
    """The checks of one planned run (``cfg`` as the pretraining command would load it, on ``device``)."""

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.device = cfg, device
        self._loader = self._batch = None

    def _first_batch(self):
        if self._batch is None:
            cfg = self.cfg
            self._loader = LOADERS.build(cfg.data.loader, cfg, method_recipe(cfg), rank=0, world=1, device=self.device)
            self._loader.set_epoch(0)
            self._batch = next(iter(self._loader))
            self._batch.check()
        return self._loader, self._batch

    def data(self) -> str:
        d = self.cfg.data
        ld, b = self._first_batch()
        source = d.beton or d.path or "the embedded default"
        return (f"{ld.num_samples} images in {source} ({d.loader} loader), {len(ld)} steps per epoch; first batch "
                f"{[tuple(v.shape) for v in b.views]} on {b.views[0].device}")

    def output(self) -> str:
        out = Path(self.cfg.run.out_dir or "runs")
        made = [p for p in (out, *out.parents) if not p.exists()]
        out.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.NamedTemporaryFile(dir=out, prefix=".doctor-") as f:
                f.write(b"x")
                f.flush()
        finally:
            for p in made:  # leave nothing behind: only the folders this check created, innermost first
                p.rmdir()
        return f"{out} writable"

    def space(self) -> str:
        out = _existing(Path(self.cfg.run.out_dir or "runs").resolve())
        disk = shutil.disk_usage(out).free
        shm = shutil.disk_usage("/dev/shm").free if Path("/dev/shm").is_dir() else 0
        msg = f"{disk / GiB:.1f} GiB free at {out}, {shm / GiB:.2f} GiB in /dev/shm"
        if disk < MIN_DISK:
            raise RuntimeError(f"{msg}: checkpoints need at least {MIN_DISK / GiB:.0f} GiB; set --out elsewhere")
        if shm < MIN_SHM:
            raise RuntimeError(f"{msg}: loader workers need at least {MIN_SHM / 2**20:.0f} MiB of /dev/shm "
                               "(docker run --shm-size=8g), or set data.num_workers=0")
        return msg

    def step(self) -> str:
        cfg = self.cfg
        ld, b = self._first_batch()
        torch.manual_seed(cfg.run.seed)
        method = build_method(cfg, build_backbone(cfg)).to(self.device)
        if cfg.model.channels_last:
            method = method.to(memory_format=torch.channels_last)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, resolve(cfg, ld.num_samples), method, ld, self.device, tmp)
            loss = float(trainer.train_step(b.views)["loss"])
        if not math.isfinite(loss):
            raise AssertionError(f"the first step's loss is {loss}")
        peak = f", peak {torch.cuda.max_memory_allocated(self.device) / GiB:.1f} GiB" if self.device.type == "cuda" else ""
        return f"one step of {cfg.method.name} at batch {cfg.data.batch_size} on {self.device}: loss {loss:.4f}{peak}"
