"""Optimizers: AdamW (MoCo v3 ViT), LARS (MoCo v3 ResNet-50) and SGD.

LARS follows MoCo v3's description: SGD with momentum whose update of every weight matrix is scaled
by the trust ratio ``eta * ||w|| / ||g + wd * w||``; 1-D parameters (biases, norms) get neither
weight decay nor the trust ratio.
"""
from __future__ import annotations

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    pn, dn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    # trust ratio where both norms are non-zero, else 1 (no host sync: torch.where)
                    q = torch.where((pn > 0) & (dn > 0), group["trust_coefficient"] * pn / dn, torch.ones_like(pn))
                    d = d.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(d)
                p.add_(mu, alpha=-group["lr"])
        return loss


def build_optimizer(cfg, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of ``optim.name`` over the trainable ``params``; lr is set per step by the trainer."""
    o = cfg.optim
    params = [p for p in params if p.requires_grad]
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=0.0, betas=o.betas, weight_decay=o.weight_decay)
    if o.name == "lars":
        return LARS(params, lr=0.0, weight_decay=o.weight_decay, momentum=o.momentum)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=o.momentum, weight_decay=o.weight_decay)
    raise ValueError(f"optim.name = {o.name!r}: choose adamw, lars or sgd")
