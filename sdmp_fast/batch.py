"""The Batch contract: the only interface between ``loaders/`` and the training code.

Every loader yields :class:`Batch` objects: ``views`` is a list of normalised ``[B, 3, H, W]`` float
tensors in channels-last memory format on the training device, grouped by resolution (multi-crop:
the global views first, then the local ones); ``index`` ``[B]`` holds the sample ids (positions in the
loader's sample list) and ``label`` ``[B]`` the class ids. Normalisation happens exactly once, inside
the loader. Mixing happens later, on the normalised views (normalisation is per-channel affine, so it
commutes with Mixup, CutMix and ResizeMix).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable

import torch


@dataclass
class Batch:
    views: list[torch.Tensor]
    index: torch.Tensor
    label: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device, non_blocking: bool = True) -> "Batch":
        return Batch(
            views=[v.to(device, non_blocking=non_blocking, memory_format=torch.channels_last) for v in self.views],
            index=self.index.to(device, non_blocking=non_blocking),
            label=self.label.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "Batch":
        """The batch in page-locked host memory (the DataLoader's pin-memory thread calls this with
        ``pin_memory=True``): its copies to the GPU are then asynchronous."""
        return Batch(views=[v.pin_memory() for v in self.views], index=self.index.pin_memory(),
                     label=self.label.pin_memory())

    def tensors(self) -> list[torch.Tensor]:
        return [*self.views, self.index, self.label]

    def check(self) -> None:
        """Raise if the batch breaks the contract (used by tests and the first step of a run)."""
        b = self.size
        if not self.views:
            raise ValueError("Batch has no views")
        for i, v in enumerate(self.views):
            if v.dim() != 4 or v.shape[0] != b or v.shape[1] != 3:
                raise ValueError(f"view {i}: expected [B={b}, 3, H, W], got {tuple(v.shape)}")
            if not v.is_floating_point():
                raise ValueError(f"view {i}: expected a float tensor, got {v.dtype}")
            if not v.is_contiguous(memory_format=torch.channels_last):
                raise ValueError(f"view {i}: expected channels-last memory format")
        if self.label.shape != (b,) or self.index.shape != (b,):
            raise ValueError("index and label must be [B]")


@runtime_checkable
class Loader(Protocol):
    """What the trainer needs from a loader."""

    batch_size: int  # per rank
    num_samples: int  # samples in the split, before sharding

    def __len__(self) -> int: ...  # steps per epoch (equal on every rank)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None: ...  # next iteration: this epoch, from this step

    def __iter__(self) -> Iterator[Batch]: ...
