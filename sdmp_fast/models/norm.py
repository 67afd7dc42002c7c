"""Synchronised BatchNorm with per-chunk statistics, for any backend and for one process.

MoCo v3 normalises each view separately (its heads run once per view) and synchronises the
statistics over all GPUs (``nn.SyncBatchNorm``): the statistics of a view are those of its B x world
samples. ``ChunkedSyncBatchNorm`` computes exactly that, and also when several views are
concatenated into one forward: the batch is split into ``chunks`` equal parts along dim 0 (set with
``bn_chunks(module, n)``, default 1) and each part gets its own statistics. ``nn.SyncBatchNorm`` is
CUDA-only and cannot do per-chunk statistics; this layer runs on CPU (gloo) and CUDA (NCCL).

Per chunk, the per-channel sums of x and x^2 and the count are summed over ranks by one
differentiable all-reduce (``dist.all_reduce_sum_autograd``: SUM forward and backward), so autograd
gives the gradient of the global batch statistics; in one process the all-reduce is the identity
and the layer equals ``nn.BatchNorm`` applied to each chunk in turn. Statistics are computed in float32
(under autocast too; float64 inputs in float64, so that a float64 model is float64 throughout);
``var = E[x^2] - E[x]^2`` is clamped at 0. Running statistics (momentum as in PyTorch, unbiased variance)
take one update per chunk, in chunk order, exactly as k separate forwards
would (so a fused multi-view pass leaves the same buffers as one pass per view), and are identical on
every rank, so buffers need no broadcast. Parameter and buffer names are those of ``nn.BatchNorm1d/2d``.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from sdmp_fast import dist


class ChunkedSyncBatchNorm(nn.Module):
    """BatchNorm over [N, C] or [N, C, *spatial]: statistics per chunk of N, summed over ranks."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.chunks = 1
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, chunks={self.chunks}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"ChunkedSyncBatchNorm({self.num_features}) got input of shape {tuple(x.shape)}")
        C, k = self.num_features, self.chunks
        shape = (1, C) + (1,) * (x.dim() - 2)  # broadcast a [C] vector over x
        ct = torch.promote_types(x.dtype, torch.float32)  # the statistics' dtype: float32, or float64
        if not self.training:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
            y = (x.to(ct) - mean) * torch.rsqrt(var + self.eps)
            return self._affine(y, shape).to(x.dtype)
        N = x.shape[0]
        if N % k:
            raise ValueError(f"ChunkedSyncBatchNorm: batch {N} is not divisible into {k} chunks")
        with torch.autocast(x.device.type, enabled=False):
            xf = x.to(ct)
            xc = xf.reshape(k, N // k, C, -1)                                        # [k, n, C, spatial]
            count = xc.shape[1] * xc.shape[3]
            stats = torch.stack([xc.sum(dim=(1, 3)), (xc * xc).sum(dim=(1, 3))], dim=1)  # [k, 2, C]
            stats = dist.all_reduce_sum_autograd(stats)
            total = count * dist.get_world()
            mean = stats[:, 0] / total                                               # [k, C]
            var = (stats[:, 1] / total - mean * mean).clamp_min(0.0)
            y = (xc - mean[:, None, :, None]) * torch.rsqrt(var + self.eps)[:, None, :, None]
            y = self._affine(y.reshape(xf.shape), shape)
            with torch.no_grad():
                # one update per chunk, in order: the buffers end exactly as after k separate forwards
                self.num_batches_tracked.add_(k)
                unbiased = var * (total / max(total - 1, 1))
                for j in range(k):
                    self.running_mean.lerp_(mean[j], self.momentum)
                    self.running_var.lerp_(unbiased[j], self.momentum)
        return y.to(x.dtype)

    def _affine(self, y: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if self.affine:
            y = y * self.weight.to(y.dtype).view(shape) + self.bias.to(y.dtype).view(shape)
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d`` in ``module`` by a ``ChunkedSyncBatchNorm`` with the same state."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        new = ChunkedSyncBatchNorm(module.num_features, module.eps,
                                   module.momentum if module.momentum is not None else 0.1, module.affine)
        with torch.no_grad():
            if module.affine:
                new.weight.copy_(module.weight)
                new.bias.copy_(module.bias)
            if module.running_mean is not None:
                new.running_mean.copy_(module.running_mean)
                new.running_var.copy_(module.running_var)
                new.num_batches_tracked.copy_(module.num_batches_tracked)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


@contextlib.contextmanager
def bn_chunks(module: nn.Module, chunks: int):
    """Within the block, every ChunkedSyncBatchNorm in ``module`` splits its batch into ``chunks`` parts."""
    layers = [m for m in module.modules() if isinstance(m, ChunkedSyncBatchNorm)]
    old = [m.chunks for m in layers]
    for m in layers:
        m.chunks = chunks
    try:
        yield module
    finally:
        for m, c in zip(layers, old):
            m.chunks = c


def encode(net: nn.Module, xs: list[torch.Tensor] | tuple[torch.Tensor, ...], fused: bool) -> list[torch.Tensor]:
    """``[net(x) for x in xs]``; with ``fused`` one forward of the concatenation, BatchNorm per x.

    The fused pass splits every ``ChunkedSyncBatchNorm`` batch into len(xs) chunks (``bn_chunks``), so
    each view keeps its own statistics and running buffers end as after one forward per view; other
    layers (LayerNorm, attention, linear) act per sample. The views must have equal batch sizes.
    """
    if not fused or len(xs) == 1:
        return [net(x) for x in xs]
    with bn_chunks(net, len(xs)):
        return list(net(torch.cat(list(xs))).chunk(len(xs)))
