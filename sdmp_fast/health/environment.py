"""What is installed: versions of everything the runs use, and which loaders import."""
from __future__ import annotations

import importlib
import platform
import subprocess

import torch

from loaders import LOADERS
from sdmp_fast.registry import MissingBackend

OPTIONAL = {"dali": "nvidia.dali", "ffcv": "ffcv"}  # backends a GPU machine may lack


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
        return "not installed" if isinstance(e, ModuleNotFoundError) else f"broken ({type(e).__name__})"


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none (no nvidia-smi)"


def versions() -> dict[str, str]:
    v = {"python": platform.python_version(), "torch": torch.__version__}
    for name, module in (("torchvision", "torchvision"), ("triton", "triton"), ("timm", "timm"),
                         ("DALI", "nvidia.dali"), ("FFCV", "ffcv")):
        v[name] = _version(module)
    v["CUDA"] = torch.version.cuda or "none (CPU build)"
    v["driver"] = driver_version()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v["GPU"] = f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB) x{torch.cuda.device_count()}"
    else:
        v["GPU"] = "none"
    return v


def installed_versions() -> str:
    v = versions()
    missing = [k for k in ("torchvision", "timm") if not v[k][0].isdigit()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing or broken: run `make setup` (pip install -e .)")
    return ", ".join(f"{k} {val}" for k, val in v.items())


def loaders_importable() -> str:
    """Every registered loader imports; an optional backend (DALI, FFCV) may be absent, any other failure fails."""
    ok, absent = [], []
    for name in LOADERS.names():
        try:
            LOADERS.get(name)
            ok.append(name)
        except MissingBackend:
            if name not in OPTIONAL:
                raise
            absent.append(f"{name} ({_version(OPTIONAL[name])})")
    return f"{', '.join(ok)} importable" + (f"; {', '.join(absent)}" if absent else "")
