"""Real work on the device: one batch of each installed loader, one eager step, a CUDA-graph step against eager.

Each function takes the device, so the tests run the CPU twin of what the doctor runs on a GPU (the captured
graph excepted: CUDA only; its bookkeeping has a CPU twin in tests/engine/test_sync_free.py).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from loaders import LOADERS
from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.health import Skipped
from sdmp_fast.health.environment import OPTIONAL
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.mixing import build_mixer
from sdmp_fast.models import build_backbone
from sdmp_fast.registry import MissingBackend

STEP = ["data.batch_size=16", "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=40",
        "optim.warmup_epochs=0.0005", "sdmp.enabled=true", "optim.clip_grad=1.0"]


def _need_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise Skipped("no CUDA GPU")
    return torch.device("cuda", torch.cuda.current_device())


def _loader_config(name: str, root: Path):
    overrides = [f"data.loader={name}", f"data.path={root}", "data.batch_size=8", "data.image_size=32",
                 "data.local_size=16", f"data.cache_dir={root}", "data.num_workers=0", "data.dali_threads=2"]
    if name == "ffcv":
        from loaders.write_beton import write_beton
        write_beton(root / "train", root / "train.beton", max_resolution=64, workers=1, progress=False)
        overrides.append(f"data.beton={root / 'train.beton'}")
    return load_config(None, overrides)


def loader_batches(device: str | torch.device, names: tuple[str, ...] | None = None) -> str:
    """One batch of every installed loader (or ``names``) from a small generated JPEG folder, to ``device``."""
    from sdmp_fast.data.generate import write_jpeg_folder
    dev = torch.device(device)
    done, absent = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpeg_folder(root / "train", classes=2, per_class=8)
        for name in names or LOADERS.names():
            try:
                LOADERS.get(name)
            except MissingBackend:
                if name in OPTIONAL:
                    absent.append(name)
                    continue
                raise
            cfg = _loader_config(name, root)
            ld = LOADERS.build(name, cfg, method_recipe(cfg), rank=0, world=1, device=dev)
            ld.set_epoch(0)
            b = next(iter(ld))
            b.check()
            where = {t.device.type for t in [*b.views, b.index, b.label]}
            if where != {dev.type}:
                raise AssertionError(f"{name}: the batch is on {sorted(where)}, not {dev.type}")
            done.append(name)
    return (f"one batch of {', '.join(done)} on {dev}" + (f"; not installed: {', '.join(absent)}" if absent else ""))


def build_trainer(overrides: list[str], device: torch.device, out: str) -> tuple[Trainer, object]:
    """A Trainer on the synthetic loader (and the loader): what the step checks run."""
    cfg = load_config(None, STEP + overrides + [f"run.device={device.type}"])
    torch.manual_seed(0)
    method = build_method(cfg, build_backbone(cfg)).to(device).to(memory_format=torch.channels_last)
    ld = LOADERS.build("synthetic", cfg, method_recipe(cfg), rank=0, world=1, device=device)
    return Trainer(cfg, resolve(cfg, ld.num_samples), method, ld, device, out), ld


def eager_step(device: str | torch.device) -> str:
    """Two eager steps of MoCo v3 + SDMP (tiny ViT, batch 16) on ``device``: finite losses."""
    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, ld = build_trainer([], dev, tmp)
        losses = [float(trainer.train_step(b.views)["loss"]) for b, _ in zip(ld, range(2))]
    if not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"non-finite loss {losses}")
    return f"MoCo v3 + SDMP, 2 steps on {dev} ({trainer.dtype}), loss {losses[-1]:.4f}"


def gpu_eager_step() -> str:
    return eager_step(_need_cuda())


def gpu_graph_step(steps: int = 6) -> str:
    """run.cuda_graph against the eager step (fp32, device-drawn mixing in both): 3 eager warm-up steps, the
    capture, then replays; losses equal within 1e-4."""
    dev = _need_cuda()
    with tempfile.TemporaryDirectory() as tmp:
        graph, ld = build_trainer(["run.precision=fp32", "run.cuda_graph=true"], dev, tmp)
        eager, _ = build_trainer(["run.precision=fp32"], dev, tmp)
        eager.method.mixer = build_mixer(eager.method.mixer.ops, eager.method.mixer.alpha, device_draws=True)
        gaps = []
        for b, _ in zip(ld, range(steps)):
            g, e = graph.train_step(b.views), eager.train_step(b.views)
            gaps.append(float((g["loss"] - e["loss"]).abs()))
        runner = graph.graph
    if runner.captures != 1 or runner.replays < 1:
        raise AssertionError(f"{runner.captures} captures, {runner.replays} replays")
    if max(gaps) > 1e-4 * max(1.0, abs(float(e["loss"]))):
        raise AssertionError(f"graph and eager losses differ by up to {max(gaps):.3g}")
    return f"captured once, {runner.replays} replays equal the eager steps (max loss gap {max(gaps):.2g})"


def gpu_loader_batches() -> str:
    return loader_batches(_need_cuda())
