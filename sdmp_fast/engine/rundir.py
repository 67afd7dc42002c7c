"""The run directory of every command: its folder, the resume point, config.yaml, metrics.jsonl, checkpoints.

Layout (rank 0 writes, the other ranks only read the resume point)::

    OUT/config.yaml      the resolved config, then one JSON line {"resolved": {...}} of derived values
    OUT/metrics.jsonl    one JSON object per logging point
    OUT/checkpoints/     step_<N>.pt, written atomically (engine/checkpoint.py), the newest two kept
    OUT/<name>.json      the command's result (summary.json, knn.json, linear.json, finetune.json)

A folder that holds checkpoints is never started over: ``--resume auto`` continues from the newest one
that loads, ``--resume PATH`` from that file, and without ``--resume`` the command refuses to start.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from sdmp_fast import dist
from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.schema import ConfigError, dump_yaml

KEEP_CHECKPOINTS = 2


def resume_point(out_dir: Path, resume: str | None, can_search: bool = True) -> Path | None:
    """The checkpoint ``--resume`` names: ``auto`` = the newest valid one in ``out_dir`` (None, said so, when there is
    none); without ``--resume`` a folder holding checkpoints is refused (nothing is overwritten).

    ``can_search``: whether ``out_dir`` was named (``run.out_dir``) or derived from what runs, so that ``auto``
    can find an earlier start; a folder made new for this start cannot."""
    if not resume:
        if ckpt.list_checkpoints(out_dir):
            raise ConfigError(f"run.out_dir {str(out_dir)!r} already holds checkpoints; continue it with --resume auto, "
                              "or choose another run.out_dir (nothing was overwritten)")
        return None
    if resume == "auto":
        if not can_search:
            raise ConfigError("--resume auto needs run.out_dir (or --out) naming the run to continue")
        path = ckpt.latest_checkpoint(out_dir)
        if path is None and dist.is_main():
            print(f"[resume] no valid checkpoint in {out_dir}: starting from scratch", file=sys.stderr)
        return path
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: no such checkpoint file")
    return path


class RunDir:
    """One command's output folder; every write happens on rank 0 only."""

    def __init__(self, path: str | Path, resume: Path | None = None):
        self.path = Path(path)
        self.resume = resume  # the checkpoint this start continues from, if any

    @classmethod
    def open(cls, configured: str, resume: str | None = None, default: Path | None = None,
             tag: str = "run") -> RunDir:
        """The folder ``configured`` (``run.out_dir``), else ``default`` (named by what runs, e.g.
        ``RUN_DIR/finetune``), else a new ``runs/<tag>-<date>-<time>`` (rank 0's name on every rank); then the
        resume point of ``--resume`` in it (:func:`resume_point`)."""
        if configured:
            path = Path(configured)
        elif default is not None:
            path = Path(default)
        else:
            path = dist.broadcast_object(Path("runs") / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
        return cls(path, resume_point(path, resume, can_search=bool(configured) or default is not None))

    def load_resume(self) -> dict | None:
        """The resume checkpoint's state (None when starting fresh)."""
        return ckpt.load(self.resume) if self.resume is not None else None

    def announce_resume(self, unit: str, position: int) -> None:
        """``[resume] PATH at <unit> <position>`` (rank 0)."""
        if dist.is_main():
            print(f"[resume] {self.resume} at {unit} {position}", file=sys.stderr)

    def write_config(self, cfg, resolved: dict[str, Any]) -> None:
        """config.yaml: the config as YAML, then the line ``{"resolved": resolved}`` (rank 0; creates the folder)."""
        if dist.is_main():
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.yaml").write_text(dump_yaml(cfg) + "\n" + json.dumps({"resolved": resolved}) + "\n")

    def log(self, line: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl (rank 0)."""
        if dist.is_main():
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")

    def write_json(self, name: str, obj: Any) -> Path:
        """OUT/<name> as indented JSON (rank 0)."""
        path = self.path / name
        if dist.is_main():
            path.write_text(json.dumps(obj, indent=1))
        return path

    def save_checkpoint(self, state: dict, step: int, fault_step: int | None = None) -> Path | None:
        """Write ``state`` as checkpoints/step_<step>.pt atomically and keep the newest two (rank 0; None elsewhere).
        ``fault_step``: the training step, for the tests' crash inside a write (``SDMP_FAULT``)."""
        if not dist.is_main():
            return None
        path = ckpt.save_atomic(state, ckpt.checkpoint_path(self.path, step), fault_step=fault_step)
        ckpt.prune(self.path, keep=KEEP_CHECKPOINTS)
        return path

    def report_stop(self, tag: str, where: str, why: str, checkpoint: str | None = None) -> None:
        """``[tag] stopped after <where> (<why>); [checkpoint C; ]continue with --resume auto --out OUT`` (rank 0)."""
        if dist.is_main():
            saved = f"checkpoint {checkpoint}; " if checkpoint is not None else ""
            print(f"[{tag}] stopped after {where} ({why}); {saved}continue with --resume auto --out {self.path}",
                  file=sys.stderr)
