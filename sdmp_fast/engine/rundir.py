"""The run directory of every command: its folder, the resume point, config.yaml, metrics.jsonl, checkpoints.

Layout (rank 0 writes, the other ranks only read the resume point)::

    OUT/config.yaml      the resolved config, then one JSON line {"resolved": {...}} of derived values
    OUT/metrics.jsonl    one JSON object per logging point (one line per logged step or epoch, also across resumes)
    OUT/checkpoints/     step_<N>.pt, written atomically (engine/checkpoint.py), the newest two kept
    OUT/<name>.json      the command's result (summary.json, knn.json, linear.json, finetune.json)
    OUT/config_changes.jsonl   one line per resume that changed a FIXED key (--allow-config-change)

A folder that holds checkpoints is never started over: ``--resume auto`` continues from the newest one
that loads, ``--resume PATH`` from that file, and without ``--resume`` the command refuses to start. A resume
keeps the checkpoint's config: a change to a key declared ``FIXED`` (``sdmp_fast/schema.py``: one that changes
the run's mathematics or data order) is refused, naming the keys, unless ``--allow-config-change`` (then
recorded in config_changes.jsonl); ``FREE`` keys (logging, evaluation, output, resources) may change. Metrics
lines after the resumed position are cut, and a run that is already complete is left as it is.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sdmp_fast import dist
from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.schema import ConfigError, changed_fixed_keys, dump_yaml

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
            why = ("does not exist" if not out_dir.exists() else
                   "holds no checkpoint that loads" if ckpt.list_checkpoints(out_dir) else "holds no checkpoint")
            print(f"[resume] {out_dir} {why}: starting a new run there (check --out / run.out_dir if you meant to "
                  "continue another one)", file=sys.stderr)
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
        self.config_changes: dict | None = None  # the FIXED keys this resume changes (--allow-config-change)

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

    def load_resume(self, cfg, allow_change: bool = False) -> dict | None:
        """The resume checkpoint's state (None when starting fresh), after checking that ``cfg`` keeps the
        checkpoint's ``FIXED`` keys (:func:`schema.changed_fixed_keys`); a change is refused unless
        ``allow_change`` (``--allow-config-change``), and then said, and recorded by :meth:`write_config` (so that
        a start that fails before it leaves the folder as it was)."""
        if self.resume is None:
            return None
        state = ckpt.load(self.resume)
        changed = changed_fixed_keys(state.get("config") or {}, cfg)
        if not changed:
            return state
        what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        if not allow_change:
            keep = " ".join(f"{k}={old if isinstance(old, str) else json.dumps(old, separators=(',', ':'))}"
                            for k, (old, _) in changed.items())
            raise ConfigError(f"cannot resume {self.resume}: this start changes {what}, which change the run's "
                              f"mathematics or data order; run with the checkpoint's values (add: {keep}), or add "
                              "--allow-config-change to continue with the new ones (recorded in the run directory)")
        self.config_changes = {"resumed_from": str(self.resume), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "changed": {k: {"was": old, "now": new} for k, (old, new) in changed.items()}}
        if dist.is_main():
            print(f"[resume] config changed with --allow-config-change: {what} (recorded in "
                  f"{self.path / 'config_changes.jsonl'})", file=sys.stderr)
        return state

    def announce_resume(self, unit: str, position: int) -> None:
        """``[resume] PATH at <unit> <position>`` (rank 0); the metrics lines after that position (written after the
        checkpoint, before the stop) are cut, so that metrics.jsonl keeps one line per logged ``unit``."""
        if not dist.is_main():
            return
        print(f"[resume] {self.resume} at {unit} {position}", file=sys.stderr)
        path = self.path / "metrics.jsonl"
        if path.is_file():
            lines = path.read_text().splitlines(keepends=True)
            kept = [x for x in lines if not x.strip() or json.loads(x).get(unit, position) <= position]
            if len(kept) < len(lines):
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                tmp.write_text("".join(kept))
                tmp.replace(path)

    def finished(self, unit: str, position: int, total: int, result: str, tag: str) -> dict | None:
        """When this start resumes a run that is already complete (``position >= total``, in ``unit``s) and has its
        result file OUT/``result``: say so (rank 0) and return the recorded result, leaving every file as it is;
        else None."""
        path = self.path / result
        if self.resume is None or position < total or not path.is_file():
            return None
        if dist.is_main():
            print(f"[{tag}] {self.path} is complete ({unit} {position} of {total}): nothing to do, every file left as "
                  f"it is; its result: {path}", file=sys.stderr)
        return json.loads(path.read_text())

    def write_config(self, cfg, resolved: dict[str, Any]) -> None:
        """config.yaml: the config as YAML, then the line ``{"resolved": resolved}``; with a config change this resume
        accepted, a line of config_changes.jsonl (rank 0; creates the folder)."""
        if dist.is_main():
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.yaml").write_text(dump_yaml(cfg) + "\n" + json.dumps({"resolved": resolved}) + "\n")
            if self.config_changes is not None:
                with open(self.path / "config_changes.jsonl", "a") as f:
                    f.write(json.dumps(self.config_changes) + "\n")

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
