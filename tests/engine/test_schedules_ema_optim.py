import math

import pytest
import torch

from sdmp_fast.engine.ema import ema_update
from sdmp_fast.engine.optim import LARS, build_optimizer, clip_grad_per_param_
from sdmp_fast.schedules import cosine_to, warmup_constant, warmup_cosine


def test_warmup_cosine():
    s = warmup_cosine(1.0, 0.1, total=110, warmup=10)
    assert s[0] == 0 and s[5] == pytest.approx(0.5) and s[10] == pytest.approx(1.0)
    assert s[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert (s[10:].diff() <= 1e-12).all()
    with pytest.raises(ValueError):
        warmup_cosine(1.0, 0.0, total=5, warmup=5)
    assert warmup_cosine(1.0, 0.0, total=1, warmup=0)[0] == 1.0


def test_momentum_cosine_to_one():
    m = cosine_to(0.99, 1.0, 100)
    assert m[0] == pytest.approx(0.99) and m[50] == pytest.approx(0.995) and m[-1] < 1.0
    assert (m.diff() >= 0).all()


def test_ema_update_is_a_lerp():
    t = [torch.zeros(3), torch.ones(2)]
    s = [torch.ones(3), torch.zeros(2)]
    ema_update(t, s, 0.9)
    assert torch.allclose(t[0], torch.full((3,), 0.1)) and torch.allclose(t[1], torch.full((2,), 0.9))
    ema_update(t, s, 1.0)  # momentum 1: unchanged
    assert torch.allclose(t[0], torch.full((3,), 0.1))


def test_lars_trust_ratio_and_no_decay_on_1d():
    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    b = torch.nn.Parameter(torch.ones(2))
    opt = LARS([w, b], lr=1.0, weight_decay=0.5, momentum=0.0, trust_coefficient=0.001)
    w.grad = torch.full((2, 2), 1.0)
    b.grad = torch.full((2,), 1.0)
    opt.step()
    d = torch.full((2, 2), 1.0) + 0.5 * 2.0  # grad + wd * w
    q = 0.001 * 4.0 / float(d.norm())
    assert torch.allclose(w, torch.full((2, 2), 2.0) - q * d)
    assert torch.allclose(b, torch.zeros(2))  # 1-D: plain SGD step, no decay, no trust ratio


def test_teacher_temperature_warmup_then_constant():
    t = warmup_constant(0.04, 0.07, total=100, warmup=30)
    assert t[0] == pytest.approx(0.04) and t[15] == pytest.approx(0.055) and t[29] == pytest.approx(0.04 + 0.03 * 29 / 30)
    assert (t[30:] == 0.07).all() and (t[:30].diff() > 0).all()
    assert (warmup_constant(0.04, 0.07, total=5, warmup=0) == 0.07).all()
    assert warmup_constant(0.04, 0.07, total=10, warmup=20)[-1] == pytest.approx(0.04 + 0.03 * 9 / 20)  # ends inside the ramp


def test_weight_decay_cosine_has_no_warmup():
    """DINO's wd schedule: half-cosine from weight_decay at step 0 towards weight_decay_end."""
    wd = warmup_cosine(0.04, 0.4, total=1000, warmup=0)
    assert wd[0] == pytest.approx(0.04) and wd[500] == pytest.approx(0.22)
    assert wd[-1] == pytest.approx(0.4 - 0.36 * 0.5 * (1 + math.cos(math.pi * 999 / 1000)))
    assert (wd.diff() >= 0).all()


def test_per_parameter_clipping_follows_dino():
    big = torch.nn.Parameter(torch.zeros(3))
    small = torch.nn.Parameter(torch.zeros(2))
    idle = torch.nn.Parameter(torch.zeros(2))  # no gradient: skipped
    big.grad = torch.tensor([3.0, 4.0, 0.0])   # norm 5 > clip 2: scaled by 2 / (5 + 1e-6)
    small.grad = torch.tensor([0.6, 0.8])      # norm 1 <= clip: untouched, bit for bit
    g_small = small.grad.clone()
    clip_grad_per_param_([big, small, idle], 2.0)
    assert torch.allclose(big.grad, torch.tensor([3.0, 4.0, 0.0]) * 2.0 / (5.0 + 1e-6))
    assert torch.equal(small.grad, g_small) and idle.grad is None


def test_optimizer_groups_without_weight_decay():
    from sdmp_fast.config import load_config
    w, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    opt = build_optimizer(load_config(overrides=["optim.weight_decay=0.5"]),
                          [{"params": [w]}, {"params": [b, frozen], "apply_wd": False}])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    assert opt.param_groups[1]["params"] == [b] and opt.param_groups[1]["apply_wd"] is False
    single = build_optimizer(load_config(), [w, b, frozen])  # a plain list: one group, as MoCo v3
    assert len(single.param_groups) == 1 and single.param_groups[0]["weight_decay"] == 0.1
