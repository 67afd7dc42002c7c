"""The start of every command: torch's CPU threads, the device and, under torchrun, the process group."""
from __future__ import annotations

import os

import torch

import loaders  # noqa: F401  (registers the loaders)
from sdmp_fast import dist
from sdmp_fast.config import ConfigError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device = {name!r} but CUDA is not available; use run.device=auto or cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # torchrun: one GPU per process
    return dev


def start_process(device_name: str, threads: int, distributed: bool = True) -> torch.device:
    """The start of every command: torch's CPU threads (0 = default), the device (under torchrun: LOCAL_RANK's
    GPU, set before NCCL starts) and, with ``distributed``, the process group from torchrun's environment."""
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL starts: one GPU per process (LOCAL_RANK)
    if distributed:
        dist.init_from_env(device)
    return device
