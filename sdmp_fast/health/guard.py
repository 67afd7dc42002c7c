"""``NoHostSync``: a dispatch mode that fails on every way a step can wait for the device or move data to the host.

The one guard of the project: the tests of the sync-free step (tests/engine/test_sync_free.py), of the mixing
(tests/mixing/) and the doctor's fake-CUDA step (:mod:`sdmp_fast.health.fake_cuda`) all run under it.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# the ops through which .item(), float(t), bool(t), .tolist() and nonzero-style shapes read device values
HOST_READS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select}
# on the CPU, t[mask] reaches the dispatcher as aten.index with a bool index (its nonzero runs in the kernel)
INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}
COPIES = {aten._to_copy, aten.copy_, aten._copy_from, aten._copy_from_and_resize}


def _device(x) -> str | None:
    return x.device.type if isinstance(x, torch.Tensor) else None


class NoHostSync(TorchDispatchMode):
    """Raises AssertionError ("host synchronisation ...") on: a host read of a device value (``.item()``,
    ``bool(t)``, ``.tolist()``, ``nonzero``, ``masked_select``), boolean-mask indexing, and any copy between
    the host and a device (``.cpu()``, ``.to("cuda")`` of a host tensor, ``copy_`` across devices)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in HOST_READS:
            raise AssertionError(f"host synchronisation in the step: {func}")
        if packet in INDEXING and any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
            raise AssertionError(f"host synchronisation in the step: boolean indexing ({func})")
        if packet in COPIES:
            src = _device(args[1]) if packet is not aten._to_copy else _device(args[0])
            dst = _device(args[0]) if packet is not aten._to_copy else torch.device(kwargs.get("device") or
                                                                                    args[0].device).type
            if src != dst and "cpu" in (src, dst):
                raise AssertionError(f"host synchronisation in the step: a copy {src} -> {dst} ({func})")
        return func(*args, **kwargs)
