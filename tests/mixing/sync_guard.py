"""A dispatch guard that fails on the ops through which a host read of a device value happens."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class ForbidHostSync(TorchDispatchMode):
    """Raises on the ops through which .item(), .tolist() or boolean-mask indexing sync.

    On CPU, ``t[mask]`` reaches the dispatcher as aten.index with a bool index (its nonzero runs
    inside the kernel), so boolean indices of the indexing ops are refused too.
    """

    FORBIDDEN = {torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero, torch.ops.aten.masked_select}
    INDEXING = {torch.ops.aten.index, torch.ops.aten.index_put, torch.ops.aten.index_put_,
                torch.ops.aten._index_put_impl_}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.FORBIDDEN:
            raise AssertionError(f"host sync through {func}")
        if func.overloadpacket in self.INDEXING and any(
                i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
            raise AssertionError(f"host sync through boolean indexing ({func})")
        return func(*args, **(kwargs or {}))
