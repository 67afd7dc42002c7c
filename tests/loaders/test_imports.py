"""Importing a loader module changes no process-wide state (hooks, threads, warnings, signals, environment, random
streams); the ffcv loader keeps torch's CPU threads as they were although ffcv's import changes them."""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REQUIRED, require

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(f"loaders.{p.stem}" for p in (ROOT / "loaders").glob("*.py") if p.stem != "__init__")

# Snapshot what a module could change for the whole process, import each loader module, compare. What the
# libraries they use change when imported (torch's inductor sets TORCHINDUCTOR_CACHE_DIR, ffcv's cv2 sets
# LD_LIBRARY_PATH) is not theirs: every library is imported before the first snapshot.
SCRIPT = """
import hashlib, importlib, logging, os, pickle, random, signal, sys, threading, warnings
import numpy as np, torch

def snapshot():
    return {"threading.excepthook": threading.excepthook, "sys.excepthook": sys.excepthook,
            "torch threads": torch.get_num_threads(), "default dtype": torch.get_default_dtype(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "matmul precision": torch.get_float32_matmul_precision(),
            "cudnn.benchmark": torch.backends.cudnn.benchmark, "warnings": list(warnings.filters),
            "signals": [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)],
            "environment": dict(os.environ), "sys.path": list(sys.path), "cwd": os.getcwd(),
            "logging": (logging.root.level, list(logging.root.handlers)), "numpy errors": np.geterr(),
            "random streams": hashlib.sha1(torch.random.get_rng_state().numpy().tobytes()
                                           + pickle.dumps((np.random.get_state(), random.getstate()))).hexdigest()}

for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
    except ImportError:  # an optional library a loader imports inside a function only
        pass
import loaders  # the package registers the loaders: that is its purpose
for name in sys.argv[2].split(","):
    before = snapshot()
    importlib.import_module(name)
    after = snapshot()
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"importing {name} changed {changed}"
print("ok")
"""


def _libraries(modules: list[str]) -> list[str]:
    """Every non-``loaders`` module the given loader modules import, anywhere in their source."""
    out = set()
    for m in modules:
        for node in ast.walk(ast.parse((ROOT / (m.replace(".", "/") + ".py")).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            out.update(n for n in names if n.split(".")[0] != "loaders")
    return sorted(out)


def test_importing_a_loader_module_changes_no_global_state():
    backends = {"loaders.dali": ("nvidia.dali", "dali"), "loaders.ffcv_loader": ("ffcv", "ffcv")}
    modules = [m for m in MODULES if m not in backends or backends[m][1] in REQUIRED
               or importlib.util.find_spec(backends[m][0].split(".")[0]) is not None]
    r = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(_libraries(modules)), ",".join(modules)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@pytest.mark.ffcv
def test_importing_the_ffcv_loader_keeps_torchs_cpu_threads():
    """ffcv's import sets torch's intra-op threads to 1; the module puts back what they were."""
    require("ffcv", "ffcv")
    code = ("import torch; torch.set_num_threads(2); import loaders.ffcv_loader; "
            "import sys; sys.exit(0 if torch.get_num_threads() == 2 else 1)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
