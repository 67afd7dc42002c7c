"""sdmp_fast.mixing.blend against slow per-sample references kept in this file."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sdmp_fast import mixing
from sdmp_fast.health.guard import NoHostSync
from sdmp_fast.mixing import OPS, apply_mix, mix, op_code, sample_lam, sample_mix_params

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
SHAPES = [(4, 3, 17, 23), (6, 3, 32, 32)]


def batch(shape, device="cpu", dtype=torch.float32, fmt="contiguous", seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    return x.contiguous(memory_format=FORMATS[fmt])


def params_for(x: torch.Tensor, op: str, lam=None, seed=0) -> mixing.MixParams:
    B, _, H, W = x.shape
    g = torch.Generator(device=x.device).manual_seed(seed)
    if lam is None:
        lam = torch.rand(B, generator=g, device=x.device)
    return sample_mix_params(lam, op, H, W, generator=g)


def box(params, i):
    return [int(t[i]) for t in (params.top, params.left, params.height, params.width)]


def reference_mix(x: torch.Tensor, params) -> torch.Tensor:
    """Per-sample loop with the plain formulas (float32 math, rounded to x's dtype once)."""
    B = x.shape[0]
    xf = x.float()
    out = xf.clone()
    for i in range(B):
        j = B - 1 - i
        if params.op == "mixup":
            lam = float(params.lam[i])
            out[i] = lam * xf[i] + (1 - lam) * xf[j]
            continue
        top, left, h, w = box(params, i)
        if h == 0 or w == 0:
            continue
        if params.op == "cutmix":
            out[i, :, top:top + h, left:left + w] = xf[j, :, top:top + h, left:left + w]
        else:
            out[i, :, top:top + h, left:left + w] = F.interpolate(
                xf[j][None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return out.to(x.dtype)


def tolerance(dtype):
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {}


def test_unknown_op_lists_the_choices():
    with pytest.raises(ValueError, match="mixup, cutmix, resizemix"):
        mix(torch.zeros(4, 3, 8, 8), torch.rand(4), "cutout")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_mixup_formula(device, dtype, fmt, shape):
    x = batch(shape, device, dtype, fmt)
    p = params_for(x, "mixup")
    mixed, lam_eff = apply_mix(x, p)
    lam = p.lam[:, None, None, None]
    expected = (lam * x.float() + (1 - lam) * x.float().flip(0)).to(dtype)
    torch.testing.assert_close(mixed, expected, **tolerance(dtype))
    torch.testing.assert_close(lam_eff, p.lam)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_cutmix_takes_each_pixel_from_own_or_partner_in_place(device, dtype, fmt, shape):
    x = batch(shape, device, dtype, fmt)
    p = params_for(x, "cutmix")
    mixed, lam_eff = apply_mix(x, p)
    B, _, H, W = shape
    from_own, from_partner = mixed == x, mixed == x.flip(0)
    assert bool((from_own | from_partner).all())
    for i in range(B):
        top, left, h, w = box(p, i)
        in_box = torch.zeros(H, W, dtype=torch.bool, device=device)
        in_box[top:top + h, left:left + w] = True
        assert torch.equal(from_partner[i].all(0), in_box)
        assert torch.equal(from_own[i].all(0), ~in_box)
    torch.testing.assert_close(mixed, reference_mix(x, p), rtol=0, atol=0)
    torch.testing.assert_close(lam_eff, 1 - (p.height * p.width).float() / (H * W))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_resizemix_matches_interpolate_per_sample(device, dtype, fmt, shape):
    x = batch(shape, device, dtype, fmt)
    p = params_for(x, "resizemix")
    mixed, _ = apply_mix(x, p)
    torch.testing.assert_close(mixed, reference_mix(x, p), **tolerance(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h, w", [(1, 1), (1, 23), (16, 7), (17, 23)])
def test_resizemix_box_sizes_edge_cases(device, h, w):
    """One-pixel boxes, full-height/width boxes and the identity resize all follow F.interpolate."""
    x = batch((2, 3, 17, 23), device)
    p = params_for(x, "resizemix")
    p = dataclasses.replace(p, height=torch.full_like(p.height, h), width=torch.full_like(p.width, w),
                            top=torch.tensor([0, 17 - h], device=device),
                            left=torch.tensor([23 - w, 0], device=device))
    torch.testing.assert_close(apply_mix(x, p)[0], reference_mix(x, p), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_lam_eff_matches_pixel_counts(device, op, fmt):
    """Constant images (value i+1 for sample i) let every pixel tell which image it came from."""
    B, C, H, W = 8, 3, 17, 23
    x = (torch.arange(B, dtype=torch.float32, device=device) + 1)[:, None, None, None].expand(B, C, H, W)
    x = x.contiguous(memory_format=FORMATS[fmt])
    own, partner = x, x.flip(0)
    mixed, lam_eff = apply_mix(x, params_for(x, op))
    if op == "mixup":
        share = ((mixed - partner) / (own - partner)).flatten(1)
        torch.testing.assert_close(share, lam_eff[:, None].expand_as(share))
    else:
        assert bool(((mixed == own) | (mixed == partner)).all())
        torch.testing.assert_close((mixed == own).float().flatten(1).mean(1), lam_eff, atol=1e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["mixup", "cutmix"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_lam_one_leaves_x_unchanged(device, op, fmt):
    x = batch((4, 3, 17, 23), device, fmt=fmt)
    mixed, lam_eff = mix(x, torch.ones(4, device=device), op)
    assert torch.equal(mixed, x)
    assert torch.equal(lam_eff, torch.ones(4, device=device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_cutmix_lam_zero_is_the_partner(device, fmt):
    x = batch((4, 3, 17, 23), device, fmt=fmt)
    mixed, lam_eff = mix(x, torch.zeros(4, device=device), "cutmix")
    assert torch.equal(mixed, x.flip(0))
    assert torch.equal(lam_eff, torch.zeros(4, device=device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_mix_is_sample_then_apply_and_deterministic(device, op):
    x = batch((4, 3, 17, 23), device)
    lam = torch.rand(4, device=device)
    a = mix(x, lam, op, torch.Generator(device=device).manual_seed(3))
    b = mix(x, lam, op, torch.Generator(device=device).manual_seed(3))
    params = sample_mix_params(lam, op, 17, 23, torch.Generator(device=device).manual_seed(3))
    c = apply_mix(x, params)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    for u, v in zip(a, c):
        assert torch.equal(u, v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_keeps_layout_dtype_device_and_input(device, op, fmt, dtype):
    x = batch((4, 3, 17, 23), device, dtype, fmt)
    before = x.clone()
    mixed, lam_eff = mix(x, torch.rand(4, device=device), op)
    assert torch.equal(x, before)
    assert mixed.shape == x.shape and mixed.dtype == dtype and mixed.device == x.device
    assert mixed.is_contiguous(memory_format=FORMATS[fmt])
    assert lam_eff.shape == (4,) and lam_eff.dtype == torch.float32 and lam_eff.device == x.device


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_row_tiling_does_not_change_the_result(monkeypatch, op, fmt):
    x = batch((6, 3, 17, 23), fmt=fmt)
    p = params_for(x, op)
    whole, _ = apply_mix(x, p)
    monkeypatch.setattr(mixing.blend, "_TILE_ELEMS", {"cpu": 1})          # one row per tile
    assert torch.equal(apply_mix(x, p)[0], whole)


def test_odd_batch_pairs_the_middle_sample_with_itself():
    x = batch((5, 3, 17, 23))
    mixed, _ = mix(x, torch.full((5,), 0.3), "mixup")
    torch.testing.assert_close(mixed[2], x[2])


def test_sync_guard_catches_item_and_boolean_indexing():
    t = torch.arange(4.0)
    with pytest.raises(AssertionError, match="host sync"), NoHostSync():
        t.sum().item()
    with pytest.raises(AssertionError, match="host sync"), NoHostSync():
        t[t > 1]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_host_sync(op, fmt):
    x = batch((4, 3, 17, 23), fmt=fmt)
    g = torch.Generator().manual_seed(0)
    with NoHostSync():
        lam = sample_lam(4, 1.0, g)
        mix(x, lam, op, g)
        sample_lam(4, 0.4, g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_device_op_code_blends_as_the_named_op(device, op, fmt):
    """The one-select blend of a device-drawn op equals the tiled blend: exactly for Mixup and CutMix, within
    float32 rounding for ResizeMix; the output keeps x's layout."""
    x = batch((6, 3, 17, 13), device, fmt=fmt)
    ops = ("resizemix", "mixup", "cutmix")
    lam = torch.rand(6, generator=torch.Generator().manual_seed(3)).to(device)
    code = op_code(torch.tensor(ops.index(op), device=device), ops)
    p = sample_mix_params(lam, code, 17, 13, torch.Generator(device=device).manual_seed(1))
    ref, ref_eff = apply_mix(x, dataclasses.replace(p, op=op))
    out, eff = apply_mix(x, p)
    assert torch.equal(eff, ref_eff) and out.is_contiguous(memory_format=FORMATS[fmt])
    assert float((out - ref).abs().max()) <= (1e-6 if op == "resizemix" else 0.0)
    assert torch.equal(mix(x, lam, code, torch.Generator(device=device).manual_seed(1))[0], out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_host_sync_with_a_device_op_code(fmt):
    x = batch((4, 3, 17, 23), fmt=fmt)
    g = torch.Generator().manual_seed(0)
    with NoHostSync():
        code = op_code(torch.randint(3, (), generator=g), OPS)
        mix(x, sample_lam(4, 1.0, g), code, g)
