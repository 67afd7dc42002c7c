"""The sharding rule shared by every loader: which sample ids rank r reads at step s of epoch e.

The permutation of an epoch comes from the **shared** random stream (seed, epoch), identical on every
rank with no communication; rank r takes the r-th slice of each global batch. Every rank runs
floor(num_samples / global_batch) steps; the remainder of the epoch is dropped (full batches only).
"""
from __future__ import annotations

from sdmp_fast.streams import epoch_permutation


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    return num_samples // global_batch


def rank_batches(num_samples: int, global_batch: int, rank: int, world: int, seed: int, epoch: int,
                 start_step: int = 0) -> list[list[int]]:
    """Sample ids of this rank for steps ``start_step..`` of ``epoch`` (each list has global_batch / world ids)."""
    local = global_batch // world
    perm = epoch_permutation(num_samples, seed, epoch)
    n = steps_per_epoch(num_samples, global_batch)
    return [perm[s * global_batch + rank * local: s * global_batch + (rank + 1) * local].tolist()
            for s in range(start_step, n)]
