"""MoCo v3 InfoNCE and the MoCo v3 + SDMP loss, as pure functions.

SDMP: "A Simple Data Mixing Prior for Improving Self-Supervised Learning", Ren et al., CVPR 2022,
https://arxiv.org/abs/2206.07692 (Eq. 3-5, Algorithm 1); docs/method.md, SDMP for MoCo v3.

Each rank holds its B local queries and the N = world*B keys gathered from every rank, with its
own keys at rows rank*B ... rank*B+B-1. Local row i has its own key at column g = rank*B + i and
its mixing partner's key at column p = rank*B + (B-1-i): partners are paired inside each rank's
local batch, as ``sdmp_fast.mixing`` pairs the images.

Decisions on what the paper and its code leave open:

* Loss form: the paper's soft-target cross-entropy,
  ``-(w_g * log_softmax[g] + w_p * log_softmax[p])``, not the released code's
  ``-log(w_g * softmax[g] + w_p * softmax[p])``.
* lam^c: the source term uses the query image's lam_eff. The mix term uses
  ``c = 1 - |lam_q[i] + lam_k[B-1-i] - 1|``, where lam_q[i] is the query image's own-fraction and
  lam_k[B-1-i] is that of the partner's mixed key image.
* Weighting: ``2T * (1 * clean + 0.5 * source + 0.5 * mix)`` by default, the code's "replace"
  weighting. The clean term is exactly ``infonce_loss / 2T`` (one shared helper).
* Queries and keys are L2-normalised here, in float32, and the logits are computed in float32
  with autocast off. Keys are detached. Only the two target columns of each row are gathered;
  no dense soft-label matrix is built. ``q_bm`` meets both key sets in one [B, 2N] matmul, and
  each N-wide half gets its own log-softmax. There is no host sync.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def infonce_loss(q: Tensor, k: Tensor, temperature: float, rank: int = 0) -> Tensor:
    """MoCo v3 loss 2T * CE(norm(q) norm(k)^T / T, rank*B + arange(B)); keys get no gradient.

    Args:
        q: [B, D] local queries (predictor outputs), not normalised.
        k: [N, D] keys gathered over all ranks, not normalised; this rank's keys are rows rank*B ...
        temperature: T.
        rank: this rank's index in the gathered keys.
    """
    _check_keys(q, k, rank)
    with torch.autocast(q.device.type, enabled=False):
        return 2 * temperature * _infonce_ce(_unit(q), _unit(k.detach()), temperature, rank)


def moco_sdmp_loss(q_a: Tensor, q_bm: Tensor, k_a: Tensor, k_am: Tensor, k_b: Tensor,
                   lam_q: Tensor, lam_k: Tensor, temperature: float, rank: int = 0,
                   weights: tuple[float, float, float] = (1.0, 0.5, 0.5)) -> dict[str, Tensor]:
    """MoCo v3 + SDMP loss of one rank: {"loss", "clean", "source", "mix"} as 0-dim tensors.

    "clean", "source" and "mix" are batch means of the clean InfoNCE, mix-vs-source (Eq. 3) and
    mix-vs-mix (Eq. 4) cross-entropies; loss = 2T * (w_clean*clean + w_source*source + w_mix*mix).

    Args:
        q_a, q_bm: [B, D] queries of the clean view a and the mixed view b^m (this rank).
        k_a, k_am, k_b: [N, D] momentum keys of a, a^m and b, gathered over all ranks.
        lam_q: [B] lam_eff of this rank's mixed query images b^m.
        lam_k: [B] lam_eff of this rank's mixed key images a^m.
        temperature: T.
        rank: this rank's index; its keys are rows rank*B ... rank*B+B-1.
        weights: (w_clean, w_source, w_mix).
    """
    B, N = q_bm.shape[0], k_a.shape[0]
    _check_keys(q_a, k_b, rank)
    _check_keys(q_bm, k_a, rank)
    if k_am.shape != k_a.shape or q_a.shape != q_bm.shape:
        raise ValueError(f"shape mismatch: q_a {tuple(q_a.shape)}, q_bm {tuple(q_bm.shape)}, "
                         f"k_a {tuple(k_a.shape)}, k_am {tuple(k_am.shape)}")
    if lam_q.shape != (B,) or lam_k.shape != (B,):
        raise ValueError(f"lam_q and lam_k must have shape [{B}], got {tuple(lam_q.shape)}, {tuple(lam_k.shape)}")
    w_clean, w_source, w_mix = weights

    with torch.autocast(q_bm.device.type, enabled=False):
        clean = _infonce_ce(_unit(q_a), _unit(k_b.detach()), temperature, rank)
        keys = torch.cat([_unit(k_a.detach()), _unit(k_am.detach())])          # [2N, D]
        log_prob = (_unit(q_bm) @ keys.T / temperature).view(B, 2, N).log_softmax(dim=-1)
        own = rank * B + torch.arange(B, device=q_bm.device)
        cols = torch.stack([own, own.flip(0)], dim=-1)                          # [B, 2]: g, p
        picked = log_prob.gather(2, cols[:, None, :].expand(B, 2, 2))            # [B, term, g/p]

        lam_q = lam_q.detach().float()
        lam_p = lam_k.detach().float().flip(0)        # the partner's mixed key image
        c = 1 - (lam_q + lam_p - 1).abs()
        source_w = torch.stack([lam_q, 1 - lam_q], dim=-1)
        mix_w = torch.stack([1 / (1 + c), c / (1 + c)], dim=-1)
        source = -(source_w * picked[:, 0]).sum(-1).mean()
        mix = -(mix_w * picked[:, 1]).sum(-1).mean()
        loss = 2 * temperature * (w_clean * clean + w_source * source + w_mix * mix)
    return {"loss": loss, "clean": clean, "source": source, "mix": mix}


def _unit(t: Tensor) -> Tensor:
    return F.normalize(t.float(), dim=1)


def _infonce_ce(q: Tensor, k: Tensor, temperature: float, rank: int) -> Tensor:
    """Mean CE of unit queries [B, D] against unit keys [N, D]; row i's positive is key rank*B + i."""
    B = q.shape[0]
    target = rank * B + torch.arange(B, device=q.device)
    return F.cross_entropy(q @ k.T / temperature, target)


def _check_keys(q: Tensor, k: Tensor, rank: int) -> None:
    if q.dim() != 2 or k.dim() != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"expected q [B, D] and k [N, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    if rank < 0 or (rank + 1) * q.shape[0] > k.shape[0]:
        raise ValueError(f"rank {rank} with B={q.shape[0]} needs at least {(rank + 1) * q.shape[0]} "
                         f"gathered keys, got {k.shape[0]}")
