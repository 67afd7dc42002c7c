"""Projection heads: MoCo v3's MLP projector/predictor and DINO's head.

MoCo v3: linear layers without bias; BatchNorm + ReLU after each hidden layer; optionally an
affine-free BatchNorm after the last layer (MoCo v3: projector always, predictor only for ViTs).
BatchNorm statistics are per view (the method calls the heads once per view, or splits a
concatenated batch with ``norm.bn_chunks``) and synchronised over ranks: ``ChunkedSyncBatchNorm``.

DINO (Caron et al. 2021, §3.1 and appendix): a 3-layer MLP (hidden width 2048, GELU, no BatchNorm)
down to a bottleneck (256), L2 normalisation, then a weight-normalised linear layer without bias to
K = 65536 outputs. Linears are initialised truncated-normal (std 0.02) with zero biases; the last
layer keeps PyTorch's default init and its gain g is set to 1 and, with ``norm_last_layer``, frozen,
so each output is a cosine similarity to a unit prototype. Weight normalisation uses
``torch.nn.utils.parametrizations.weight_norm``: the parameters are ``original0`` (g, [K, 1]) and
``original1`` (v, [K, bottleneck]), so ``state_dict`` and the EMA see plain tensors; ``weight`` is
recomputed from them on every access. The normalisation and the last layer run in float32 under
autocast (a small matmul next to the backbone; bf16 logits would be too coarse for tau_t = 0.04).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from sdmp_fast.models.norm import ChunkedSyncBatchNorm


def build_mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        last = i == num_layers - 1
        d_out = out_dim if last else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if not last:
            layers += [ChunkedSyncBatchNorm(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(ChunkedSyncBatchNorm(d_out, affine=False))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """[N, in_dim] features -> [N, out_dim] logits: MLP, bottleneck, L2 norm, weight-normalised linear."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False), dim=0)
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        # float32 under autocast: the outputs are cosines in [-1, 1] that the losses divide by
        # temperatures down to 0.04; bf16 would round them to about 3 significant digits first
        with torch.autocast(x.device.type, enabled=False):
            return self.last_layer(F.normalize(x.float(), dim=-1))
