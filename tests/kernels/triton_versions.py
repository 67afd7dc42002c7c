"""The triton versions the kernel tests run under: this environment's (CI: 3.8) and 3.6.0, the GPU machines'.

3.6 lives in a side folder of the environment (``<venv>/triton36``, installed by scripts/setup_triton36.sh),
outside its site-packages; a subprocess with that folder first on ``PYTHONPATH`` imports it instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRITON36 = Path(sys.prefix) / "triton36"
VERSIONS = ["ci", "3.6"]


def env_for(version: str, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that imports triton ``version`` ("ci": this environment's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    path = [str(ROOT)]
    if version == "3.6":
        if not (TRITON36 / ".complete").is_file():
            pytest.fail(f"triton 3.6.0 is not installed at {TRITON36}: run `make setup` (scripts/setup_triton36.sh)")
        path.insert(0, str(TRITON36))
    env.update(PYTHONPATH=os.pathsep.join(path), OMP_NUM_THREADS="1", **extra)
    return env
