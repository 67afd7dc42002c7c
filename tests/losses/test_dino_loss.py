"""DINO loss, centre and DINO + SDMP terms against slow references written from the papers' equations."""
import pytest
import torch
import torch.nn.functional as F

from sdmp_fast.losses.dino import dino_loss, dino_sdmp_terms, student_log_probs, teacher_probs, update_center


def _H(p: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Cross-entropy -sum_k p_k log q_k of one sample."""
    return -(p * logq).sum()


def reference_dino_loss(student_out, teacher_out, center, t_temp, s_temp, shared=None):
    """DINO's loop over crop pairs: skip the pair where the student looks at the teacher's own view."""
    T, S = len(teacher_out), len(student_out)
    shared = min(T, S) if shared is None else shared
    total, n = 0.0, 0
    for t in range(T):
        q = F.softmax((teacher_out[t] - center) / t_temp, dim=-1)
        for s in range(S):
            if s == t and t < shared:
                continue
            logp = F.log_softmax(student_out[s] / s_temp, dim=-1)
            total = total + torch.sum(-q * logp, dim=-1).mean()
            n += 1
    return total / n


@pytest.mark.parametrize("globals_, locals_", [(2, 0), (2, 2), (2, 6)])
def test_dino_loss_matches_the_per_pair_reference(globals_, locals_):
    g = torch.Generator().manual_seed(globals_ * 10 + locals_)
    B, K = 6, 32
    student = torch.randn(globals_ + locals_, B, K, generator=g, dtype=torch.float64).float() * 3
    teacher = torch.randn(globals_, B, K, generator=g).float() * 3
    center = torch.randn(1, K, generator=g) * 0.1
    got = dino_loss(student_log_probs(student, 0.1), teacher_probs(teacher, center, 0.04))
    ref = reference_dino_loss(student, teacher, center, 0.04, 0.1)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_dino_loss_shared_views_and_gradient():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(3, 4, 16, generator=g, requires_grad=True)
    teacher = torch.randn(2, 4, 16, generator=g)
    c = torch.zeros(1, 16)
    got = dino_loss(student_log_probs(student, 0.1), teacher_probs(teacher, c, 0.07), shared_views=1)
    ref = reference_dino_loss(student, teacher, c, 0.07, 0.1, shared=1)  # 2*3 - 1 pairs
    assert torch.allclose(got, ref, atol=1e-5)
    got.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    with pytest.raises(ValueError, match="no \\(teacher, student\\) pair"):
        dino_loss(student_log_probs(student[:1], 0.1), teacher_probs(teacher[:1], c, 0.07))


def test_center_update_is_an_ema_of_the_batch_mean():
    g = torch.Generator().manual_seed(0)
    center = torch.randn(1, 8, generator=g)
    out = torch.randn(10, 8, generator=g)
    new = update_center(center, out, 0.9)
    assert torch.allclose(new, 0.9 * center + 0.1 * out.mean(0, keepdim=True))
    assert torch.equal(update_center(center, out, 1.0), center)
    assert new.shape == (1, 8) and not new.requires_grad


def reference_sdmp_terms(P_a, P_m, logS, lam, lam_g, mask=None):
    """The DINO + SDMP terms of docs/method.md (SDMP for DINO) sample by sample: loops over mixed views v, teacher globals a and samples i."""
    A, B, _ = P_a.shape
    V = logS.shape[0]
    source_pairs, n_pairs = 0.0, 0
    for v in range(V):
        for a in range(A):
            if mask is not None and not mask[v][a]:
                continue
            per_sample = 0.0
            for i in range(B):
                p = B - 1 - i
                l = lam[v, i]
                target = l * P_a[a, i] + (1 - l) * P_a[a, p]
                per_sample = per_sample + _H(target, logS[v, i])
            source_pairs = source_pairs + per_sample / B
            n_pairs += 1
    mix_total = 0.0
    for v in range(V):
        per_sample = 0.0
        for i in range(B):
            p = B - 1 - i
            c = 1 - abs(lam[v, i] + lam_g[p] - 1)
            target = P_m[i] / (1 + c) + c / (1 + c) * P_m[p]
            per_sample = per_sample + _H(target, logS[v, i])
        mix_total = mix_total + per_sample / B
    return source_pairs / n_pairs, mix_total / V


@pytest.mark.parametrize("V, mask", [(1, None), (3, None), (4, None), (2, [[True, False], [True, True]])])
def test_sdmp_terms_match_the_per_sample_reference(V, mask):
    g = torch.Generator().manual_seed(V)
    A, B, K = 2, 6, 24
    P_a = teacher_probs(torch.randn(A, B, K, generator=g) * 2, torch.zeros(K), 0.07)
    P_m = teacher_probs(torch.randn(B, K, generator=g) * 2, torch.zeros(K), 0.07)
    logS = student_log_probs(torch.randn(V, B, K, generator=g) * 2, 0.1)
    lam = torch.rand(V, B, generator=g)
    lam_g = torch.rand(B, generator=g)
    mask_t = None if mask is None else torch.tensor(mask)
    got = dino_sdmp_terms(P_a, P_m, logS, lam, lam_g, mask_t)
    ref_s, ref_m = reference_sdmp_terms(P_a, P_m, logS, lam, lam_g, mask)
    assert torch.allclose(got["source"], ref_s, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got["mix"], ref_m, rtol=1e-5, atol=1e-5)


def test_sdmp_terms_limits():
    """lam = 1: the source target is the own global; identical composition (c = 1) weighs both halves 1/2."""
    g = torch.Generator().manual_seed(1)
    P_a = teacher_probs(torch.randn(2, 4, 8, generator=g), torch.zeros(8), 0.1)
    P_m = teacher_probs(torch.randn(4, 8, generator=g), torch.zeros(8), 0.1)
    logS = student_log_probs(torch.randn(1, 4, 8, generator=g), 0.1)
    out = dino_sdmp_terms(P_a, P_m, logS, torch.ones(1, 4), torch.zeros(4))  # c = 1 - |1 + 0 - 1| = 1
    own = torch.stack([-(P_a[a] * logS[0]).sum(-1).mean() for a in range(2)]).mean()
    assert torch.allclose(out["source"], own, atol=1e-6)
    half = -(0.5 * (P_m + P_m.flip(0)) * logS[0]).sum(-1).mean()
    assert torch.allclose(out["mix"], half, atol=1e-6)
    with pytest.raises(ValueError, match="lam must be"):
        dino_sdmp_terms(P_a, P_m, logS, torch.ones(2, 4), torch.zeros(4))
