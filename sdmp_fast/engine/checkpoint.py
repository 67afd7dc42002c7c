"""Atomic checkpoint files: written to a temporary name, fsynced, then renamed.

A reader therefore sees either the previous complete file or the new complete one, never a partial
write. ``latest_checkpoint`` skips files that do not load.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CKPT_DIR = "checkpoints"


def save_atomic(obj: Any, path: str | Path, fault_step: int | None = None) -> Path:
    """Write ``obj`` to ``path`` atomically. ``fault_step``: the training step, for ``SDMP_FAULT``'s
    ``kill_in_checkpoint@N`` (the tests' crash in the middle of a write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            if fault_step is not None:
                from sdmp_fast.engine.preempt import fault, kill_now
                if fault("kill_in_checkpoint", fault_step):
                    f.truncate(f.tell() // 2)
                    os.fsync(f.fileno())
                    kill_now(f"in the middle of writing {path}")
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / CKPT_DIR / f"step_{step:09d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    d = Path(out_dir) / CKPT_DIR
    return sorted(d.glob("step_*.pt")) if d.is_dir() else []


def prune(out_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; remove the temporary files a crashed writer left behind."""
    for p in list_checkpoints(out_dir)[:-keep]:
        p.unlink(missing_ok=True)
    d = Path(out_dir) / CKPT_DIR
    for p in d.glob(".step_*.pt.tmp-*") if d.is_dir() else []:
        if not p.name.endswith(f".tmp-{os.getpid()}"):
            p.unlink(missing_ok=True)


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``out_dir`` that loads; None if there is none."""
    for p in reversed(list_checkpoints(out_dir)):
        try:
            load(p)
            return p
        except Exception:  # noqa: BLE001 - a damaged file is skipped; the next older one is tried
            continue
    return None
