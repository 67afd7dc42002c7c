"""sdmp_fast.mixing.mixer: the op draw of a step (host or device stream) and the mixing of its views."""
from __future__ import annotations

import pytest
import torch

from sdmp_fast.health.guard import NoHostSync
from sdmp_fast.mixing import OPS, DeviceMixer, HostMixer, build_mixer, mix, sample_lam
from sdmp_fast.streams import StepRandom

CPU = torch.device("cpu")
OPS_RUN = ("resizemix", "mixup", "cutmix")


def views(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(6, 3, 17, 13, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(n)]


def test_build_mixer_chooses_the_draws_once():
    host, device = build_mixer(OPS_RUN, 0.5), build_mixer(OPS_RUN, 0.5, device_draws=True)
    assert type(host) is HostMixer and type(device) is DeviceMixer
    assert host.ops == device.ops == OPS_RUN and host.alpha == device.alpha == 0.5
    with pytest.raises(ValueError, match="torch reference"):
        build_mixer(OPS_RUN, device_draws=True, mix_fn=lambda *a, **k: None)
    with pytest.raises(ValueError, match="mixup, cutmix, resizemix"):
        build_mixer(("cutout",))


def test_host_mixer_draws_the_op_and_the_coin_from_the_shared_host_stream():
    mixer, rng, ref = build_mixer(OPS_RUN), StepRandom.create(3, 0, CPU), StepRandom.create(3, 0, CPU)
    local, shared_device = rng.local.get_state(), rng.shared_device.get_state()
    a, b = views()
    for _ in range(8):
        assert mixer.draw_op(rng, CPU) == OPS_RUN[ref.shared.choice(3)]
        x, y = mixer.swap(a, b, rng)
        assert (x is b and y is a) if ref.shared.coin() else (x is a and y is b)
    assert torch.equal(rng.local.get_state(), local) and torch.equal(rng.shared_device.get_state(), shared_device)
    assert mixer.label("cutmix") == "cutmix"


def test_device_mixer_draws_the_same_decisions_as_device_values():
    mixer, rng, ref = build_mixer(OPS_RUN, device_draws=True), StepRandom.create(3, 0, CPU), StepRandom.create(3, 0, CPU)
    shared = rng.shared.state_dict()
    a, b = views()
    seen = set()
    for _ in range(12):
        code = mixer.draw_op(rng, CPU)
        index = torch.randint(3, (), generator=ref.shared_device)
        assert code.dim() == 0 and int(code) == OPS.index(OPS_RUN[int(index)])
        seen.add(int(code))
        x, y = mixer.swap(a, b, rng)
        flip = bool(torch.rand((), generator=ref.shared_device) < 0.5)
        assert torch.equal(x, b if flip else a) and torch.equal(y, a if flip else b)
    assert seen == {0, 1, 2}
    assert rng.shared.state_dict() == shared       # the host stream is left alone
    assert mixer.label(code) == "drawn on the device"


@pytest.mark.parametrize("device_draws", [False, True], ids=["host", "device"])
def test_lam_and_boxes_come_from_the_rank_stream(device_draws):
    """lam ~ Beta(alpha, alpha) then one box draw per mixed view, all from rng.local: the same images
    whichever stream drew the op."""
    mixer = build_mixer(("cutmix",), alpha=0.7, device_draws=device_draws)
    rng, ref = StepRandom.create(5, 1, CPU), StepRandom.create(5, 1, CPU)
    x, y = views()
    op = mixer.draw_op(rng, CPU)
    lam = mixer.lam(6, rng, CPU)
    assert torch.equal(lam, sample_lam(6, 0.7, generator=ref.local))
    for v in (x, y):
        got, eff = mixer.mix(v, lam, op, rng)
        want, want_eff = mix(v, lam, "cutmix", generator=ref.local)
        assert torch.equal(got, want) and torch.equal(eff, want_eff)
    assert torch.equal(rng.local.get_state(), ref.local.get_state())


def test_device_mixer_draws_without_host_sync():
    mixer, rng = build_mixer(OPS, device_draws=True), StepRandom.create(0, 0, CPU)
    a, b = views()
    with NoHostSync():
        a, b = mixer.swap(a, b, rng)
        op = mixer.draw_op(rng, CPU)
        mixer.mix(b, mixer.lam(6, rng, CPU), op, rng)

