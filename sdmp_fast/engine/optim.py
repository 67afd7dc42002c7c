"""Optimizers: AdamW (MoCo v3 ViT, DINO), LARS (MoCo v3 ResNet-50) and SGD; DINO's gradient clipping.

LARS follows MoCo v3's description: SGD with momentum whose update of every weight matrix is scaled
by the trust ratio ``eta * ||w|| / ||g + wd * w||``; 1-D parameters (biases, norms) get neither
weight decay nor the trust ratio.

The optimizer is built over the method's parameter groups (``Method.param_groups``). A group with
``"apply_wd": False`` gets no weight decay and is left alone by the weight-decay schedule (DINO puts
biases and 1-D norm parameters there); MoCo v3 keeps one group with weight decay on everything.

``clip_grad_per_param_`` is DINO's clipping: each parameter's gradient is scaled by
``min(1, clip / (norm + 1e-6))``, computed for all parameters at once with foreach ops and without a
host sync (multiplying by exactly 1 leaves a gradient bit-identical, so no branch is needed).
"""
from __future__ import annotations

import torch


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


@torch.no_grad()
def clip_grad_per_param_(params, clip: float) -> None:
    """Scale each gradient in place by min(1, clip / (||grad|| + 1e-6)) (DINO's ``clip_gradients``)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))
    scale = (clip / (norms.float() + 1e-6)).clamp_(max=1.0)
    torch._foreach_mul_(grads, list(scale.to(grads[0].dtype).unbind()))


def build_optimizer(cfg, params, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The optimizer of ``optim.name`` over trainable parameters or parameter groups; lr is set per step by the trainer.

    ``params``: a list of parameters (one group) or of group dicts; a group with ``"apply_wd": False``
    gets weight decay 0. With ``device`` (the training step's), AdamW takes its lr as a 0-dim tensor on
    that device, written per step without a host sync: ``fused=True`` (one kernel), and on CUDA also
    ``capturable=True`` (its step counters live on the device, so a CUDA graph can replay it).
    """
    o = cfg.optim
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [dict(g, params=[p for p in g["params"] if p.requires_grad],
                       **({"weight_decay": 0.0} if not g.get("apply_wd", True) else {})) for g in params]
        params = [g for g in params if g["params"]]
    else:
        params = [p for p in params if p.requires_grad]
    if o.name == "adamw":
        if device is None:
            return torch.optim.AdamW(params, lr=0.0, betas=o.betas, weight_decay=o.weight_decay)
        kind = {"fused": True} if device.type == "cpu" else {"fused": True, "capturable": True}
        if params and isinstance(params[0], dict):  # one lr tensor per group (each is written every step)
            params = [dict(g, lr=torch.zeros((), device=device)) for g in params]
        return torch.optim.AdamW(params, lr=torch.zeros((), device=device), betas=o.betas,
                                 weight_decay=o.weight_decay, **kind)
    if o.name == "lars":
        return LARS(params, lr=0.0, weight_decay=o.weight_decay, momentum=o.momentum)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=o.momentum, weight_decay=o.weight_decay)
    raise ValueError(f"optim.name = {o.name!r}: choose adamw, lars or sgd")
