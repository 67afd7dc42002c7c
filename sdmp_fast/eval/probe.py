"""Linear probes on frozen features: the features of each protocol, the heads, the SGD steps; top-k accuracy.

Features ``[B, D]`` of a frozen backbone (docs/method.md, Evaluation):

* ``mocov3``: the last block's class token after the final LayerNorm: ``backbone(x)`` of a timm ViT
  built with ``num_classes=0`` and token pooling (MoCo v3 main_lincls.py); for a ResNet the pooled
  features;
* ``dino``: the class tokens of the last 4 blocks, each through the final LayerNorm, concatenated
  (``[B, 4 * D]``; DINO eval_linear.py with ``n_last_blocks=4`` and no patch-token pooling, its ViT-S
  setting), ViTs only.

Heads are ``nn.Linear`` initialised N(0, 0.01) with zero bias (both protocols); training is SGD with
momentum on cross-entropy, the learning rate on a half-cosine over epochs (set once per epoch, as
MoCo v3's ``adjust_learning_rate`` and DINO's ``CosineAnnealingLR`` do). Several heads (the trained
backbone's and the random-init one's) train side by side on the same batches: one summed loss, whose
gradient for each head is that of its own term.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

PROTOCOLS = ("mocov3", "dino")
DINO_BLOCKS = 4


def probe_features(backbone: nn.Module, x: torch.Tensor, protocol: str) -> torch.Tensor:
    """Features ``[B, D]`` (mocov3) or ``[B, 4 * D]`` (dino) of images ``x`` ``[B, 3, H, W]``, in float32."""
    if protocol == "mocov3":
        return backbone(x).float()
    if protocol == "dino":
        outs = backbone.get_intermediate_layers(x, n=DINO_BLOCKS, return_prefix_tokens=True, norm=True)
        return torch.cat([prefix[:, 0] for _, prefix in outs], dim=-1).float()
    raise ValueError(f"protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")


def feature_dim(backbone: nn.Module, protocol: str) -> int:
    d = backbone.num_features
    return DINO_BLOCKS * d if protocol == "dino" else d


class LinearHeads(nn.Module):
    """One linear classifier per arm (e.g. ``trained``, ``random_init``): ``{arm: [B, D_arm]} -> {arm: [B, C]}``."""

    def __init__(self, dims: dict[str, int], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleDict({arm: nn.Linear(d, num_classes) for arm, d in dims.items()})
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {arm: head(feats[arm]) for arm, head in self.heads.items()}


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Half-cosine from ``base_lr`` at epoch 0 towards 0 at ``epochs`` (the value used during ``epoch``)."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def probe_step(heads: nn.Module, optimizer: torch.optim.Optimizer, feats: dict[str, torch.Tensor],
               labels: torch.Tensor) -> torch.Tensor:
    """One SGD step of every head on its features; returns the per-arm losses ``[A]`` (detached, on the device)."""
    logits = heads(feats)
    losses = torch.stack([F.cross_entropy(z, labels) for z in logits.values()])
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()
    return losses.detach()


def build_probe_optimizer(heads: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(heads.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the top k scores, for each k (k clipped to the class count).

    Args:
        scores: ``[N, C]`` logits or votes.
        labels: ``[N]`` class indices.
    Returns ``[len(ks)]`` counts on the scores' device (nothing read on the host).
    """
    k_max = min(max(ks), scores.shape[1])
    hit = scores.topk(k_max, dim=1).indices == labels[:, None]
    return torch.stack([hit[:, :min(k, k_max)].any(1).sum() for k in ks])


def percent_correct(counts: torch.Tensor, n: int, num_classes: int, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """``{"top1": %, "top5": %}`` from :func:`topk_correct` counts over ``n`` samples; a top-k with more k than
    classes is left out."""
    return {f"top{k}": 100.0 * float(counts[i]) / max(n, 1) for i, k in enumerate(ks) if k <= num_classes}


@torch.no_grad()
def evaluate_heads(heads: nn.Module, feats: dict[str, torch.Tensor], labels: torch.Tensor,
                   chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Per arm: [top-1 correct, top-5 correct] counts over the cached features."""
    out: dict[str, torch.Tensor] = {}
    for s in range(0, labels.shape[0], chunk):
        part = {arm: f[s:s + chunk] for arm, f in feats.items()}
        for arm, z in heads(part).items():
            c = topk_correct(z, labels[s:s + chunk])
            out[arm] = out[arm] + c if arm in out else c
    return out


def format_accuracy(label: str, acc: dict[str, float]) -> str:
    """``  trained      top-1  77.01  top-5  99.11`` (top-5 ``n/a`` with fewer than 5 classes)."""
    top5 = f"{acc['top5']:6.2f}" if "top5" in acc else "   n/a"
    return f"  {label:<12} top-1 {acc['top1']:6.2f}  top-5 {top5}"
