"""DINO's cross-view distillation loss, its centre update and the DINO + SDMP terms, as pure functions.

DINO: "Emerging Properties in Self-Supervised Vision Transformers", Caron et al., ICCV 2021,
https://arxiv.org/abs/2104.14294 (Eq. 1-4). SDMP: Ren et al., CVPR 2022, https://arxiv.org/abs/2206.07692
(§3.3 Case 2, Eq. 6-9); the DINO part of SDMP was never released, and the terms below follow the
reconstruction in docs/method.md, SDMP for DINO.

Shape letters: T teacher views, S student views, V mixed student views, A teacher global views,
B batch, K head outputs. ``H(P, S) = -sum_k P_k log S_k`` is the cross-entropy of a teacher
distribution P and a student log-distribution.

* Teacher: ``P = softmax((h_t - C) / tau_t)`` (``teacher_probs``), computed once per step and reused by
  every term. Student: ``log softmax(h_s / tau_s)`` (``student_log_probs``).
* ``dino_loss``: mean over all (teacher view t, student view s) pairs except those where the student
  looks at the teacher's own view, of the batch-mean ``H(P_t, S_s)`` (DINO's averaging over pairs). All
  T x S cross-entropies come from one einsum ``tbk,sbk->ts`` over the stacked views; the same-view pairs
  are masked out (their cost is T of the T*S blocks).
* ``update_center``: ``C <- m C + (1 - m) mean(teacher outputs)``, the mean all-reduced over ranks
  (``sdmp_fast.dist``: the identity in one process, no host sync).
* ``dino_sdmp_terms`` (docs/method.md, SDMP for DINO). Partner ``p(i) = B-1-i`` inside the local batch.
  - Source teacher: ``L_s = mean_{v,a} mean_i H(lam_{v,i} P_a,i + (1 - lam_{v,i}) P_a,p(i), S_v,i)``
    with ``lam_{v,i}`` the lam_eff of mixed student view v of image i.
  - Mix teacher: ``L_m = mean_v mean_i H(P_m,i / (1 + c) + c P_m,p(i) / (1 + c), S_v,i)`` with
    ``c = 1 - |lam_{v,i} + lam^g_p(i) - 1|`` and lam^g the lam_eff of the teacher's mixed global view.
  - H is linear in its target, so every target is a weighted sum of per-sample cross-entropies
    against [P_a, flip(P_a), P_m, flip(P_m)]; all of them come from one batched contraction
    ``tbk,vbk->vtb`` and no [V, A, B, K] mixed target is materialised.
  - An optional [V, A] mask drops (mixed view, teacher global) pairs from L_s: DINO + SDMP with
    ``sdmp.mix_global_student`` mixes the student's global 2, which must not be distilled from the
    teacher's clean global 2 (the same crop, the pair DINO itself skips).

Everything runs in float32 with autocast off; teacher inputs are detached.
"""
from __future__ import annotations

import torch
from torch import Tensor

from sdmp_fast import dist


def teacher_probs(teacher_out: Tensor, center: Tensor, temperature: float | Tensor) -> Tensor:
    """``softmax((teacher_out - center) / temperature)`` over the last axis, float32, no gradient.

    Args:
        teacher_out: [..., K] teacher head outputs.
        center: [K] or [1, K] centre.
        temperature: teacher temperature tau_t (a float or a 0-dim device tensor).
    """
    with torch.autocast(teacher_out.device.type, enabled=False):
        return ((teacher_out.detach().float() - center.float()) / temperature).softmax(dim=-1)


def student_log_probs(student_out: Tensor, temperature: float) -> Tensor:
    """``log_softmax(student_out / temperature)`` over the last axis, float32."""
    with torch.autocast(student_out.device.type, enabled=False):
        return (student_out.float() / temperature).log_softmax(dim=-1)


def dino_loss(student_logp: Tensor, teacher_prob: Tensor, shared_views: int | None = None) -> Tensor:
    """DINO loss: mean over (t, s) pairs, skipping same-view pairs, of the batch-mean H(P_t, S_s).

    Args:
        student_logp: [S, B, K] student log-probabilities, one row per student view.
        teacher_prob: [T, B, K] teacher probabilities (the global views).
        shared_views: the first ``shared_views`` student views are teacher views 0, 1, ... in order
            (pairs (t, t) are skipped for t < shared_views); default min(T, S), DINO's layout
            (student views = the teacher's globals followed by the locals).
    """
    S, B, K = student_logp.shape
    T = teacher_prob.shape[0]
    if teacher_prob.shape[1:] != (B, K):
        raise ValueError(f"teacher_prob {tuple(teacher_prob.shape)} does not match student_logp {tuple(student_logp.shape)}")
    shared = min(T, S) if shared_views is None else shared_views
    if not 0 <= shared <= min(T, S):
        raise ValueError(f"shared_views = {shared}: must be in [0, {min(T, S)}]")
    pairs = T * S - shared
    if pairs < 1:
        raise ValueError(f"no (teacher, student) pair left: T={T}, S={S}, shared_views={shared}")
    with torch.autocast(student_logp.device.type, enabled=False):
        ce = -torch.einsum("tbk,sbk->ts", teacher_prob.detach().float(), student_logp.float()) / B   # [T, S]
        same = torch.eye(T, S, device=ce.device, dtype=ce.dtype)
        same[shared:] = 0.0      # teacher views past ``shared`` are not among the student views
        return (ce * (1.0 - same)).sum() / pairs


@torch.no_grad()
def update_center(center: Tensor, teacher_out: Tensor, momentum: float) -> Tensor:
    """The new centre ``momentum * center + (1 - momentum) * mean over ranks and rows of teacher_out``.

    Args:
        center: [1, K] current centre.
        teacher_out: [N, K] raw teacher head outputs (every row counts equally; N equal on every rank).
        momentum: centre EMA coefficient m (DINO: 0.9).
    """
    with torch.autocast(teacher_out.device.type, enabled=False):
        batch_center = dist.all_reduce_mean(teacher_out.detach().float().mean(dim=0, keepdim=True))
        return center * momentum + batch_center * (1.0 - momentum)


def dino_sdmp_terms(teacher_prob: Tensor, teacher_mix_prob: Tensor, student_mix_logp: Tensor, lam: Tensor,
                    lam_global: Tensor, source_mask: Tensor | None = None) -> dict[str, Tensor]:
    """SDMP's source-teacher and mix-teacher terms for DINO: {"source": L_s, "mix": L_m}.

    Args:
        teacher_prob: [A, B, K] teacher probabilities of the clean global views P_a.
        teacher_mix_prob: [B, K] teacher probabilities of the mixed global view P_m.
        student_mix_logp: [V, B, K] student log-probabilities of the mixed views.
        lam: [V, B] lam_eff of each mixed student view (own fraction of image i).
        lam_global: [B] lam_eff of the teacher's mixed global view.
        source_mask: optional [V, A] bool; False drops the pair (v, a) from L_s's mean.
    """
    A, B, K = teacher_prob.shape
    V = student_mix_logp.shape[0]
    if student_mix_logp.shape[1:] != (B, K) or teacher_mix_prob.shape != (B, K):
        raise ValueError(f"shape mismatch: teacher_prob {tuple(teacher_prob.shape)}, teacher_mix_prob "
                         f"{tuple(teacher_mix_prob.shape)}, student_mix_logp {tuple(student_mix_logp.shape)}")
    if lam.shape != (V, B) or lam_global.shape != (B,):
        raise ValueError(f"lam must be [{V}, {B}] and lam_global [{B}], got {tuple(lam.shape)}, {tuple(lam_global.shape)}")
    if source_mask is not None and source_mask.shape != (V, A):
        raise ValueError(f"source_mask must be [{V}, {A}], got {tuple(source_mask.shape)}")
    with torch.autocast(student_mix_logp.device.type, enabled=False):
        p_a = teacher_prob.detach().float()
        p_m = teacher_mix_prob.detach().float()
        # targets, in rows: P_a (A), P_a of the partner (A), P_m, P_m of the partner
        targets = torch.cat([p_a, p_a.flip(1), p_m[None], p_m.flip(0)[None]])           # [2A+2, B, K]
        ce = -torch.einsum("tbk,vbk->vtb", targets, student_mix_logp.float())              # [V, 2A+2, B]
        lam = lam.detach().float()
        w = lam[:, None, :]                                                               # [V, 1, B]
        source_pairs = (w * ce[:, :A] + (1 - w) * ce[:, A:2 * A]).mean(dim=-1)            # [V, A]
        if source_mask is None:
            source = source_pairs.mean()
        else:
            keep = source_mask.to(device=source_pairs.device, dtype=source_pairs.dtype)
            source = (source_pairs * keep).sum() / keep.sum()
        c = 1 - (lam + lam_global.detach().float().flip(0)[None, :] - 1).abs()            # [V, B]
        mix = ((ce[:, 2 * A] + c * ce[:, 2 * A + 1]) / (1 + c)).mean()
    return {"source": source, "mix": mix}
