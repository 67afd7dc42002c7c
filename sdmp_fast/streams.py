"""Every seeded random stream of the project, and how each is derived from ``run.seed``.

Each stream is a function of the seed and a position in training (rank, epoch, step, sample), never of
what ran before, so a resumed or re-sharded run draws what an uninterrupted one would. The constants mixed
into the seeds keep the streams apart.

The training step:
* ``StepRandom``: a host stream shared by every rank (``HostStream``: mixing op, view swap), a per-rank
  device generator (lambda, boxes) and a shared device generator (the shared decisions as device values,
  for a captured CUDA graph);
* ``rank_reseed``: a rank's device generator when a checkpoint of another world size is resumed.

The data:
* ``epoch_permutation``: the data order of an epoch, identical on every rank;
* ``sample_generator``: the per-sample augmentation of the reference loader and the linear probe;
* ``step_generator``: the batched augmentation of the nvjpeg and ffcv loaders at one step;
* ``pipeline_seed``: the seed of one DALI pipeline (rank, epoch, start step);
* ``synthetic_generator``: the synthetic loader's views at one step.

Fine-tuning:
* ``seed_step_streams``: torch / numpy / random of a fine-tuning step (timm's augmentations use them).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch


class HostStream:
    """A seeded random stream that lives on the host as plain Python/numpy state (no tensors).

    Drawing from it never touches a tensor, so it can decide host-side things (which mixing op, which
    view is the query) inside a step that must not synchronise with the device, and it reads the same
    on every rank. Its state is a dict of ints and strings (checkpoints load it with weights_only).
    """

    def __init__(self, seed: int):
        self._gen = np.random.Generator(np.random.PCG64(seed))

    def choice(self, n: int) -> int:
        """Uniform in 0 .. n-1."""
        return int(self._gen.integers(n))

    def coin(self) -> bool:
        """True with probability 1/2."""
        return bool(self._gen.random() < 0.5)

    def state_dict(self) -> dict:
        return self._gen.bit_generator.state

    def load_state_dict(self, state) -> None:
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError("the checkpoint's shared random stream is not a PCG64 state, so this run cannot continue "
                             "it exactly; start a new run")
        self._gen.bit_generator.state = state


@dataclass
class StepRandom:
    """The random streams of a step.

    ``shared``: a host stream seeded identically on every rank (view-swap coin, mixing op): ranks agree
    without communication, and drawing from it never synchronises with the device.
    ``local``: a generator on the training device seeded with seed + rank (lambda, boxes): ranks differ.
    ``shared_device``: a generator on the training device seeded identically on every rank, for the
    same decisions as ``shared`` when they must be device values (``mixing.DeviceMixer``, for
    ``run.cuda_graph``: a captured CUDA graph cannot take host decisions per replay).
    """
    shared: HostStream
    local: torch.Generator
    shared_device: torch.Generator

    @classmethod
    def create(cls, seed: int, rank: int, device: torch.device) -> "StepRandom":
        shared = HostStream(seed * 7919 + 17)
        local = torch.Generator(device=device).manual_seed(seed * 7919 + 1_000_003 * (rank + 1))
        shared_device = torch.Generator(device=device).manual_seed(seed * 7919 + 29)
        return cls(shared, local, shared_device)

    def state_dict(self) -> dict:
        return {"shared": self.shared.state_dict(), "local": self.local.get_state(),
                "shared_device": self.shared_device.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.shared.load_state_dict(state["shared"])
        self.local.set_state(state["local"])
        self.shared_device.set_state(state["shared_device"])


def rank_reseed(seed: int, rank: int, step: int) -> int:
    """The seed of a rank's ``StepRandom.local`` when a checkpoint of another world size is resumed at ``step``:
    ranks still differ, and the run continues (not bit for bit)."""
    seq = np.random.SeedSequence([seed, rank, step, 0x5EED])
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(2))


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the data in ``epoch`` ([num_samples] int64), the same on every rank."""
    g = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return torch.randperm(num_samples, generator=g)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The per-sample random stream: a function of (seed, epoch, index) only."""
    state = np.random.SeedSequence([seed, epoch, index, 0x5D3]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def step_generator(seed: int, rank: int, epoch: int, step: int, device: torch.device) -> torch.Generator:
    """The augmentation stream of the batched loaders (nvjpeg, ffcv) at one step: a function of
    (seed, rank, epoch, step) only, so a resumed run draws what an uninterrupted one would."""
    state = np.random.SeedSequence([seed, rank, epoch, step, 0x4A9]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def pipeline_seed(seed: int, rank: int, epoch: int, start_step: int) -> int:
    """The per-rank augmentation seed of one pipeline: a function of (seed, rank, epoch, start step)."""
    state = np.random.SeedSequence([seed, rank, epoch, start_step, 0xDA11]).generate_state(1, np.uint32)
    return int(state[0] >> 1)  # DALI takes a non-negative int


def synthetic_generator(seed: int, epoch: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The synthetic loader's stream at one step: a function of (seed, epoch, step, rank) only."""
    return torch.Generator(device=device).manual_seed(((seed * 1009 + epoch) * 1_000_003 + step) * 131 + rank)


def seed_step_streams(seed: int, rank: int, epoch: int, step: int) -> torch.Generator:
    """Seed torch / numpy / random of this process (augmentation without workers, Mixup, drop-path) from
    (seed, rank, epoch, step); returns the generator that seeds the DataLoader workers."""
    s = np.random.SeedSequence([seed, rank, epoch, step, 0xF17E]).generate_state(2, np.uint32)
    torch.manual_seed(int(s[0]) << 31 | int(s[1]) >> 1)
    np.random.seed(int(s[0]))
    random.seed(int(s[1]))
    return torch.Generator().manual_seed(int(s[1]) << 20 | int(s[0]) >> 12)
