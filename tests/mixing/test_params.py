"""sdmp_fast.mixing.params: lambda ~ Beta(alpha, alpha), op codes and the one box sampler."""
from __future__ import annotations

import math

import pytest
import torch

from sdmp_fast.mixing import OPS, op_code, sample_lam, sample_mix_params

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]


def test_unknown_op_lists_the_choices():
    with pytest.raises(ValueError, match="mixup, cutmix, resizemix"):
        sample_mix_params(torch.rand(4), "fmix", 8, 8)
    with pytest.raises(ValueError, match="mixup, cutmix, resizemix"):
        op_code(torch.tensor(0), ("cutmix", "cutout"))


@pytest.mark.parametrize("size", [32, 224])
def test_resizemix_lam_eff_stays_in_about_0_1_to_0_9(size):
    lam = torch.linspace(0, 1, 201)
    lam_eff = sample_mix_params(lam, "resizemix", size, size, torch.Generator().manual_seed(0)).lam_eff
    assert 0.1 <= float(lam_eff.min()) < 0.13
    assert 0.89 < float(lam_eff.max()) <= 0.91
    assert bool((lam_eff.diff() >= 0).all())          # more own image for larger lam


@pytest.mark.parametrize("op", ["cutmix", "resizemix"])
@pytest.mark.parametrize("H, W", [(17, 23), (224, 224)])
def test_box_sizes_follow_the_python_formula_and_lie_inside(op, H, W):
    edges = torch.tensor([0.0, 1.0, 0.5, 0.75, 0.19])
    lam = torch.cat([edges, torch.rand(500, generator=torch.Generator().manual_seed(1))])
    p = sample_mix_params(lam, op, H, W, torch.Generator().manual_seed(0))
    for i, value in enumerate(lam.tolist()):
        keep = value if op == "cutmix" else 0.8 * value + 0.1
        assert (int(p.height[i]), int(p.width[i])) == (int(H * math.sqrt(1 - keep)), int(W * math.sqrt(1 - keep)))
    assert bool((p.top >= 0).all() and (p.left >= 0).all())
    assert bool((p.top + p.height <= H).all() and (p.left + p.width <= W).all())
    assert p.top.dtype == p.height.dtype == torch.int64 and p.lam_eff.dtype == torch.float32
    if op == "cutmix":
        assert (int(p.height[0]), int(p.height[1])) == (H, 0)      # lam = 0: whole image; lam = 1: none
    torch.testing.assert_close(p.lam_eff, (1 - p.height * p.width / (H * W)).float())


@pytest.mark.parametrize("op", ["cutmix", "resizemix"])
def test_box_positions_cover_every_valid_offset_and_are_seeded(op):
    H, W, n = 32, 20, 3000
    lam = torch.full((n,), 0.5)
    p = sample_mix_params(lam, op, H, W, torch.Generator().manual_seed(0))
    h, w = int(p.height[0]), int(p.width[0])
    assert set(p.top.tolist()) == set(range(H - h + 1))
    assert set(p.left.tolist()) == set(range(W - w + 1))
    again = sample_mix_params(lam, op, H, W, torch.Generator().manual_seed(0))
    other = sample_mix_params(lam, op, H, W, torch.Generator().manual_seed(1))
    assert torch.equal(p.top, again.top) and torch.equal(p.left, again.left)
    assert not torch.equal(p.top, other.top)


def test_named_mixup_draws_nothing():
    g = torch.Generator().manual_seed(2)
    before = g.get_state()
    p = sample_mix_params(torch.rand(4), "mixup", 8, 8, g)
    assert torch.equal(g.get_state(), before)
    assert int(p.height.abs().sum() + p.width.abs().sum()) == 0


def test_op_code_is_the_position_in_OPS():
    ops = ("resizemix", "mixup", "cutmix")  # the index is into a run's op list, not OPS
    for i, op in enumerate(ops):
        code = op_code(torch.tensor(i), ops)
        assert code.dtype == torch.int64 and code.dim() == 0 and int(code) == OPS.index(op)


@pytest.mark.parametrize("op", OPS)
def test_an_op_code_draws_the_boxes_of_the_named_op(op):
    """Same sizes, positions and lam_eff as the named op; every code consumes the same generator amount."""
    lam = torch.rand(64, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(1)
    coded = sample_mix_params(lam, torch.tensor(OPS.index(op)), 17, 13, g)
    assert torch.equal(g.get_state(), _after_one_box_draw(64))
    assert torch.is_tensor(coded.op) and int(coded.op) == OPS.index(op)
    named = sample_mix_params(lam, op, 17, 13, torch.Generator().manual_seed(1))
    for field in ("lam", "top", "left", "height", "width", "lam_eff"):
        assert torch.equal(getattr(coded, field), getattr(named, field)), field


def _after_one_box_draw(batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    torch.rand(2, batch, generator=g, dtype=torch.float64)
    return g.get_state()


@pytest.mark.parametrize("device", DEVICES)
def test_sample_lam_alpha_one_is_the_generators_uniform(device):
    lam = sample_lam(6, 1.0, torch.Generator(device=device).manual_seed(5))
    expected = torch.rand(6, generator=torch.Generator(device=device).manual_seed(5), device=device)
    assert torch.equal(lam, expected) and lam.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("alpha", [0.2, 0.5, 2.0])
def test_sample_lam_has_beta_moments_and_is_seeded(device, alpha):
    n = 20000
    lam = sample_lam(n, alpha, torch.Generator(device=device).manual_seed(0))
    assert lam.shape == (n,) and lam.dtype == torch.float32 and lam.device.type == device
    assert bool(((lam >= 0) & (lam <= 1)).all())
    var = 1 / (4 * (2 * alpha + 1))                   # Beta(a, a): mean 1/2, variance 1/(4(2a+1))
    assert abs(float(lam.mean()) - 0.5) < 4 * math.sqrt(var / n)
    assert abs(float(lam.var()) - var) < 0.05 * var
    assert torch.equal(lam, sample_lam(n, alpha, torch.Generator(device=device).manual_seed(0)))


def test_sample_lam_rejects_non_positive_alpha():
    with pytest.raises(ValueError, match="alpha"):
        sample_lam(4, 0.0)
