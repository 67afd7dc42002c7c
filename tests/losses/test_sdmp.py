"""Tests of the MoCo v3 and MoCo v3 + SDMP losses against a slow per-row reference kept here."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sdmp_fast.losses.sdmp import infonce_loss, moco_sdmp_loss

D = 8
RANKS = [(1, 0), (3, 0), (3, 1), (3, 2)]      # (world, rank)


def inputs(B: int, world: int, seed: int = 0, requires_grad: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    N = world * B

    def t(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)
    return dict(q_a=t(B, D), q_bm=t(B, D), k_a=t(N, D), k_am=t(N, D), k_b=t(N, D),
                lam_q=torch.rand(B, generator=g), lam_k=torch.rand(B, generator=g))


def reference(q_a, q_bm, k_a, k_am, k_b, lam_q, lam_k, temperature, rank=0, weights=(1.0, 0.5, 0.5)):
    """Row by row in Python floats, with an explicit softmax."""
    def unit(v):
        norm = math.sqrt(sum(a * a for a in v))
        return [a / norm for a in v]

    def log_softmax(q, keys):
        logits = [sum(a * b for a, b in zip(unit(q), unit(k))) / temperature for k in keys]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(z - top) for z in logits))
        return [z - log_z for z in logits]

    q_a, q_bm, k_a, k_am, k_b = (t.detach().tolist() for t in (q_a, q_bm, k_a, k_am, k_b))
    lam_q, lam_k = lam_q.tolist(), lam_k.tolist()
    B = len(q_a)
    clean = source = mix = 0.0
    for i in range(B):
        g, p = rank * B + i, rank * B + (B - 1 - i)
        clean -= log_softmax(q_a[i], k_b)[g]
        ls = log_softmax(q_bm[i], k_a)
        source -= lam_q[i] * ls[g] + (1 - lam_q[i]) * ls[p]
        c = 1 - abs(lam_q[i] + lam_k[B - 1 - i] - 1)
        lm = log_softmax(q_bm[i], k_am)
        mix -= (1 / (1 + c)) * lm[g] + (c / (1 + c)) * lm[p]
    clean, source, mix = clean / B, source / B, mix / B
    w_clean, w_source, w_mix = weights
    loss = 2 * temperature * (w_clean * clean + w_source * source + w_mix * mix)
    return {"loss": loss, "clean": clean, "source": source, "mix": mix}


@pytest.mark.parametrize("B", [4, 6])
@pytest.mark.parametrize("world, rank", RANKS)
@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_matches_per_row_reference(B, world, rank, temperature):
    x = inputs(B, world, seed=B + 10 * rank)
    out = moco_sdmp_loss(**x, temperature=temperature, rank=rank)
    expected = reference(**x, temperature=temperature, rank=rank)
    assert set(out) == {"loss", "clean", "source", "mix"}
    for name, value in out.items():
        assert value.dim() == 0 and value.dtype == torch.float32
        assert float(value) == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name


@pytest.mark.parametrize("world, rank", RANKS)
def test_infonce_is_2T_cross_entropy_and_the_clean_term(world, rank):
    B, T = 4, 0.2
    x = inputs(B, world)
    logits = F.normalize(x["q_a"], dim=1) @ F.normalize(x["k_b"], dim=1).T / T
    expected = 2 * T * F.cross_entropy(logits, rank * B + torch.arange(B))
    loss = infonce_loss(x["q_a"], x["k_b"], T, rank=rank)
    torch.testing.assert_close(loss, expected)
    clean = moco_sdmp_loss(**x, temperature=T, rank=rank)["clean"]
    torch.testing.assert_close(2 * T * clean, loss)


@pytest.mark.parametrize("weights, term", [((1.0, 0.0, 0.0), "clean"), ((0.0, 1.0, 0.0), "source"),
                                           ((0.0, 0.0, 1.0), "mix")])
def test_weights_select_terms(weights, term):
    T = 0.2
    x = inputs(6, 3)
    out = moco_sdmp_loss(**x, temperature=T, rank=1, weights=weights)
    torch.testing.assert_close(out["loss"], 2 * T * out[term])
    default = moco_sdmp_loss(**x, temperature=T, rank=1)
    terms = default["clean"] + 0.5 * default["source"] + 0.5 * default["mix"]
    torch.testing.assert_close(default["loss"], 2 * T * terms)


def test_gradient_reaches_queries_only():
    x = inputs(4, 3, requires_grad=True)
    moco_sdmp_loss(**x, temperature=0.2, rank=2)["loss"].backward()
    for name in ("q_a", "q_bm"):
        assert x[name].grad is not None and bool(x[name].grad.abs().sum() > 0), name
    for name in ("k_a", "k_am", "k_b"):
        assert x[name].grad is None, name
    k = torch.randn(8, D, requires_grad=True)
    q = torch.randn(4, D, requires_grad=True)
    infonce_loss(q, k, 0.2, rank=1).backward()
    assert k.grad is None and q.grad is not None


@pytest.mark.parametrize("lam, c", [((0.2, 0.9), 0.9), ((0.7, 0.7), 0.6), ((1.0, 1.0), 0.0), ((0.3, 0.7), 1.0)])
def test_mix_weight_c_is_shared_by_the_pair(lam, c):
    """c = 1 - |lam_g + lam_p - 1| is the same for both rows of a pair.

    One pair (B = 2). Row 1's query is row 0's reflected by the map that swaps the two keys, so row 1
    sees row 0's logits with own and partner columns swapped. With a symmetric c, both rows give
    -(log p_own + c log p_partner) / (1 + c) with row 0's log-probabilities. Identical compositions
    (lam_g + lam_p = 1) give c = 1; two unmixed images (lam = 1) share nothing, c = 0.
    """
    T = 0.2
    g = torch.Generator().manual_seed(0)
    k0 = F.normalize(torch.randn(D, generator=g), dim=0)
    k1 = F.normalize(torch.randn(D, generator=g), dim=0)
    u = F.normalize(k0 - k1, dim=0)
    reflect = torch.eye(D) - 2 * torch.outer(u, u)            # k0 <-> k1
    q0 = torch.randn(D, generator=g)
    x = inputs(2, 1)
    x.update(q_bm=torch.stack([q0, reflect @ q0]), k_am=torch.stack([k0, k1]),
             lam_q=torch.tensor(lam), lam_k=torch.tensor(lam))
    mix = moco_sdmp_loss(**x, temperature=T, weights=(0.0, 0.0, 1.0))["mix"]
    log_p = (F.normalize(q0, dim=0) @ torch.stack([k0, k1]).T / T).log_softmax(0)
    expected = -(log_p[0] + c * log_p[1]) / (1 + c)
    torch.testing.assert_close(mix, expected, rtol=1e-5, atol=1e-6)


def test_loss_is_float32_under_autocast_and_for_half_inputs():
    x = inputs(4, 3)
    full = moco_sdmp_loss(**x, temperature=0.2, rank=1)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = moco_sdmp_loss(**x, temperature=0.2, rank=1)["loss"]
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, full)
    half = {k: (v.bfloat16() if k.startswith(("q", "k")) else v) for k, v in x.items()}
    assert moco_sdmp_loss(**half, temperature=0.2, rank=1)["loss"].dtype == torch.float32


def test_loss_decreases_when_optimising_queries():
    torch.manual_seed(0)
    B, world, rank, T = 6, 2, 1, 0.2
    x = inputs(B, world)
    q_a = x.pop("q_a").requires_grad_()
    q_bm = x.pop("q_bm").requires_grad_()
    losses = []
    for _ in range(30):                 # plain SGD, lr 1 (torch.optim's first step imports for ~1 s)
        loss = moco_sdmp_loss(q_a, q_bm, **x, temperature=T, rank=rank)["loss"]
        q_a.grad = q_bm.grad = None
        loss.backward()
        with torch.no_grad():
            q_a -= q_a.grad
            q_bm -= q_bm.grad
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]


def test_rejects_inconsistent_shapes():
    x = inputs(4, 2)
    with pytest.raises(ValueError, match="rank"):
        moco_sdmp_loss(**x, temperature=0.2, rank=2)
    with pytest.raises(ValueError, match="lam"):
        moco_sdmp_loss(**{**x, "lam_k": torch.rand(3)}, temperature=0.2)


class ForbidHostSync(TorchDispatchMode):
    FORBIDDEN = {torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero, torch.ops.aten.masked_select}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.FORBIDDEN:
            raise AssertionError(f"host sync through {func}")
        return func(*args, **(kwargs or {}))


def test_no_host_sync():
    x = inputs(4, 3, requires_grad=True)
    with ForbidHostSync():
        moco_sdmp_loss(**x, temperature=0.2, rank=1)["loss"].backward()
        infonce_loss(x["q_a"], x["k_b"], 0.2, rank=1)
