import math

import pytest
import torch

from sdmp_fast.engine.ema import ema_update
from sdmp_fast.engine.optim import LARS
from sdmp_fast.engine.schedules import cosine_to, warmup_cosine


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
