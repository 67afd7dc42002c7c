"""Projection and prediction MLPs of MoCo v3.

Linear layers without bias; BatchNorm + ReLU after each hidden layer; optionally an affine-free
BatchNorm after the last layer (MoCo v3: projector always, predictor only for ViTs).
BatchNorm statistics are per view: the method calls the heads once per view.
"""
from __future__ import annotations

from torch import nn


def build_mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        last = i == num_layers - 1
        d_out = out_dim if last else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)
