"""Test doubles of a loader (the ``Loader`` protocol of sdmp_fast/batch.py)."""
from __future__ import annotations

import time


class Slowed:
    """``inner``'s batches, each after a sleep of ``seconds``: a deliberately slow input pipeline."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds = inner, seconds
        self.batch_size = getattr(inner, "batch_size", 1)
        self.num_samples = getattr(inner, "num_samples", 0)

    def __len__(self):
        return len(self.inner)

    def set_epoch(self, epoch, start_step=0):
        self.inner.set_epoch(epoch, start_step)

    def __iter__(self):
        for b in self.inner:
            time.sleep(self.seconds)
            yield b
