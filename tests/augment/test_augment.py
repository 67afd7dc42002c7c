"""Batched augmentation (sdmp_fast.augment) against torchvision's functional ops and the reference loader.

Stage tests build ViewParams by hand and switch one op on at a time (mean 0, std 1, so a view is the
[0, 1] image); distribution tests compare sample_view_params with sdmp_fast.augment.reference.rrc_params.
"""
from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from images import canvas_of, edges_image, pil_resized_crop, texture

import sdmp_fast.augment as aug
from sdmp_fast.augment import ViewParams, apply_views, eval_views, sample_view_params
from sdmp_fast.augment.recipes import Recipe, ViewSpec, dino_recipe, mocov3_recipe
from sdmp_fast.augment.reference import MODES, rrc_params
from sdmp_fast.data.images import EvalSpec, apply_eval, eval_spec

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ID_MEAN, ID_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
# every op statically enabled (apply_views skips ops whose probability is 0); hand-built params pick the ops
ALL_ON = dict(flip_p=0.5, jitter_p=0.8, jitter=(0.4, 0.4, 0.2, 0.1), gray_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0),
              solarize_p=0.2)
U8_MEAN_GAP, U8_MAX_GAP = 0.4 / 255, 1.05 / 255  # resample vs torchvision on uint8 (measured 0.29 / 1.03 levels)
# (top, left, h, w) and view size: downscale, upscale through the checkerboard of edges_image, a thin box, all of it
PIL_BOXES = [((5, 7, 50, 70), 24), ((10, 20, 13, 17), 40), ((3, 4, 30, 11), 29), ((0, 0, 61, 83), 32),
             ((20, 30, 20, 20), 64)]


def _params(b: int, h: int, w: int, **kw) -> ViewParams:
    """Identity parameters (whole image, no op) for ``b`` images of h x w; ``kw`` overrides fields (scalar or list)."""
    base = dict(top=0, left=0, height=h, width=w, flip=False, jitter=False, brightness=1.0, contrast=1.0,
                saturation=1.0, hue=0.0, gray=False, blur=False, sigma=0.0, solarize=False)
    base.update(kw)
    out = {}
    for k, v in base.items():
        v = v if isinstance(v, list) else [v] * b
        dtype = torch.int64 if k in ("top", "left", "height", "width") else (
            torch.bool if isinstance(v[0], bool) else torch.float32)
        out[k] = torch.tensor(v, dtype=dtype)
    return ViewParams(**out)


def _one(size: int, mean=ID_MEAN, std=ID_STD, **spec) -> Recipe:
    return Recipe("t", (ViewSpec(size=size, **{**ALL_ON, **spec}),), mean, std)


def _slice(p: ViewParams, b: int) -> ViewParams:
    return ViewParams(**{k: v[b:b + 1] for k, v in vars(p).items()})


# ------------------------------------------------------------------------------------------ stages

def test_crop_resize_and_flip_match_torchvision_resized_crop():
    imgs = [texture(90, 130, 0), texture(40, 30, 1), texture(120, 77, 2), texture(64, 64, 3)]
    canvas, sizes = canvas_of(imgs)
    s = 24
    # (top, left, h, w): strong/mild downscale, upscale, whole image, a thin box
    boxes = [(10, 7, 80, 100), (3, 2, 17, 20), (0, 0, 120, 77), (20, 5, 30, 9)]
    flips = [False, True, False, True]
    p = _params(4, 0, 0, top=[b[0] for b in boxes], left=[b[1] for b in boxes], height=[b[2] for b in boxes],
                width=[b[3] for b in boxes], flip=flips)
    out = apply_views(canvas, sizes, [p], _one(s))[0]
    for b, (img, (t, l, h, w)) in enumerate(zip(imgs, boxes)):
        ref_f = TF.resized_crop(img.float() / 255, t, l, h, w, [s, s], antialias=True)
        ref_8 = TF.resized_crop(img, t, l, h, w, [s, s], antialias=True).float() / 255
        if flips[b]:
            ref_f, ref_8 = TF.horizontal_flip(ref_f), TF.horizontal_flip(ref_8)
        torch.testing.assert_close(out[b], ref_f, atol=2e-5, rtol=0)  # same maths as torchvision on float
        gap = (out[b] - ref_8).abs()
        assert gap.mean() <= U8_MEAN_GAP and gap.max() <= U8_MAX_GAP, (b, gap.mean() * 255, gap.max() * 255)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_crops_match_pil_and_the_reference_for_both_filters(interpolation):
    """Each spec's filter (MoCo v3: PIL's bilinear, DINO: PIL's bicubic) against PIL's crop + resize and the uint8
    reference, on gradients and a black/white checkerboard (where the cubic overshoots: without clipping the
    horizontal pass as PIL does, the gap there reaches 25 levels). Measured: max 1.03 levels, mean 0.27."""
    img = edges_image(61, 83)
    canvas, sizes = canvas_of([img])
    for (t, l, h, w), s in PIL_BOXES:
        p = _params(1, 0, 0, top=t, left=l, height=h, width=w)
        out = apply_views(canvas, sizes, [p], _one(s, flip_p=0.0, interpolation=interpolation))[0][0]
        pil = pil_resized_crop(img, (t, l, h, w), s, interpolation).float() / 255
        ref = TF.resized_crop(img, t, l, h, w, [s, s], interpolation=MODES[interpolation], antialias=True).float() / 255
        for what, target in (("PIL", pil), ("reference", ref)):
            gap = (out - target).abs()
            assert gap.mean() <= U8_MEAN_GAP and gap.max() <= U8_MAX_GAP, (what, s, gap.mean() * 255, gap.max() * 255)


def test_float16_resampling_path_used_on_cuda_stays_close(monkeypatch):
    img = texture(70, 90, 4)
    canvas, sizes = canvas_of([img])
    p = _params(1, 0, 0, top=5, left=9, height=60, width=70)
    ref = apply_views(canvas, sizes, [p], _one(20))[0]
    monkeypatch.setattr(aug, "_resample_dtype", lambda device: torch.float16)
    half = apply_views(canvas, sizes, [p], _one(20))[0]
    assert half.dtype == torch.float32
    gap = (half - ref).abs()
    assert gap.mean() <= 0.1 / 255 and gap.max() <= 0.5 / 255


S = 24  # colour stages: identity crop of an S x S image, so the view is exactly img / 255


@pytest.fixture(scope="module")
def square():
    imgs = [texture(S, S, 10 + k) for k in range(4)]
    canvas, sizes = canvas_of(imgs)
    return canvas, sizes, canvas.float() / 255


@pytest.mark.parametrize("field, values, tv", [
    ("brightness", [0.6, 0.9, 1.25, 1.4], TF.adjust_brightness),
    ("contrast", [0.6, 0.85, 1.2, 1.4], TF.adjust_contrast),
    ("saturation", [0.0, 0.8, 1.1, 1.2], TF.adjust_saturation),
    ("hue", [-0.1, -0.03, 0.04, 0.1], TF.adjust_hue),
])
def test_each_colour_op_matches_torchvision_on_float(square, field, values, tv):
    canvas, sizes, x0 = square
    p = _params(4, S, S, jitter=True, **{field: values})
    out = apply_views(canvas, sizes, [p], _one(S))[0]
    for b, f in enumerate(values):
        torch.testing.assert_close(out[b], tv(x0[b], f), atol=2e-5, rtol=0)


def test_jitter_runs_brightness_contrast_saturation_hue_in_that_order(square):
    canvas, sizes, x0 = square
    f = dict(brightness=[1.3, 0.7, 1.0, 1.0], contrast=[0.7, 1.3, 1.1, 1.0], saturation=[1.2, 0.8, 0.9, 1.0],
             hue=[0.08, -0.05, 0.0, 0.0])  # sample 3: jitter off, identity factors
    p = _params(4, S, S, jitter=[True, True, True, False], **f)
    out = apply_views(canvas, sizes, [p], _one(S))[0]
    assert aug.JITTER_ORDER == ("brightness", "contrast", "saturation", "hue")
    for b in range(3):
        ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(
            x0[b], f["brightness"][b]), f["contrast"][b]), f["saturation"][b]), f["hue"][b])
        torch.testing.assert_close(out[b], ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(out[3], x0[3], atol=1e-7, rtol=0)
    idle = apply_views(canvas, sizes, [_params(4, S, S)], _one(S))[0]
    torch.testing.assert_close(idle, x0, atol=1e-7, rtol=0)  # identity factors: untouched


def test_grayscale_solarize_and_normalisation_match_torchvision(square):
    canvas, sizes, x0 = square
    gray = apply_views(canvas, sizes, [_params(4, S, S, gray=[True, False, True, False])], _one(S))[0]
    for b in range(4):
        ref = TF.rgb_to_grayscale(x0[b], num_output_channels=3) if b % 2 == 0 else x0[b]
        torch.testing.assert_close(gray[b], ref, atol=1e-6, rtol=0)
    sol = apply_views(canvas, sizes, [_params(4, S, S, solarize=[True, False, True, True])],
                      _one(S, solarize_threshold=128))[0]
    for b in range(4):
        ref = TF.solarize(x0[b], threshold=128 / 255) if b != 1 else x0[b]
        torch.testing.assert_close(sol[b], ref, atol=1e-6, rtol=0)
    # uint8 semantics: exactly the pixels >= 128 flip
    torch.testing.assert_close(sol[0], TF.solarize(canvas[0], 128).float() / 255, atol=1e-6, rtol=0)
    norm = apply_views(canvas, sizes, [_params(4, S, S)], _one(S, mean=MEAN, std=STD))[0]
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(norm, (x0 - m) / s, atol=1e-5, rtol=0)


def test_blur_matches_torchvision_gaussian_blur_with_per_sample_sigma(square):
    canvas, sizes, x0 = square
    sigmas = [0.3, 0.9, 1.7, 2.0]  # kernels 3, 7, 13, 13 taps
    blur = [True, True, True, False]
    p = _params(4, S, S, blur=blur, sigma=[s if on else 0.0 for s, on in zip(sigmas, blur)])
    out = apply_views(canvas, sizes, [p], _one(S))[0]
    for b, sig in enumerate(sigmas):
        k = 2 * math.ceil(3 * sig) + 1
        ref = TF.gaussian_blur(x0[b], [k, k], [sig, sig]) if blur[b] else x0[b]
        torch.testing.assert_close(out[b], ref, atol=2e-6, rtol=0)


def test_blur_comes_before_solarize(square):
    canvas, sizes, x0 = square
    p = _params(4, S, S, blur=True, sigma=1.2, solarize=True)
    out = apply_views(canvas, sizes, [p], _one(S))[0]
    ref = TF.solarize(TF.gaussian_blur(x0, [9, 9], [1.2, 1.2]), 128 / 255)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=0)


# ------------------------------------------------------------------------------------------ sampling

def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance."""
    grid = np.sort(np.concatenate([a, b]))
    ca = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(ca - cb).max())


@pytest.mark.parametrize("hw", [(240, 180), (60, 600), (50, 1000)])
def test_crop_boxes_follow_the_reference_distribution(hw):
    """Area fraction, aspect and position vs rrc_params; (60, 600) falls back often, (50, 1000) always."""
    H, W = hw
    n, scale, ratio = 3000, (0.08, 1.0), (3 / 4, 4 / 3)
    recipe = Recipe("t", (ViewSpec(size=32, scale=scale, ratio=ratio),), MEAN, STD)
    p = sample_view_params(recipe, torch.tensor([[H, W]] * n), torch.Generator().manual_seed(1))[0]
    ours = np.stack([t.numpy() for t in (p.top, p.left, p.height, p.width)], 1).astype(np.float64)
    g = torch.Generator().manual_seed(2)
    ref = np.array([rrc_params(H, W, scale, ratio, g) for _ in range(n)], dtype=np.float64)
    for box in (ours, ref):  # always inside the image
        assert (box[:, 2] > 0).all() and (box[:, 3] > 0).all()
        assert (box[:, 0] >= 0).all() and (box[:, 0] + box[:, 2] <= H).all()
        assert (box[:, 1] >= 0).all() and (box[:, 1] + box[:, 3] <= W).all()

    def stats(box):
        area = box[:, 2] * box[:, 3] / (H * W)
        aspect = np.log(box[:, 3] / box[:, 2])
        cy = (box[:, 0] + box[:, 2] / 2) / H
        cx = (box[:, 1] + box[:, 3] / 2) / W
        return area, aspect, cy, cx

    for a, b in zip(stats(ours), stats(ref)):
        assert _ks(a, b) < 0.05  # 3000 vs 3000 draws: critical distance 0.05 at p ~ 0.001
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(stats(ours)[0], q) - np.quantile(stats(ref)[0], q)) < 0.04
    fall_ours = np.mean((ours[:, 2] == H) & (ours[:, 3] == round(H * 4 / 3)))
    fall_ref = np.mean((ref[:, 2] == H) & (ref[:, 3] == round(H * 4 / 3)))
    assert abs(fall_ours - fall_ref) < 0.03
    if hw == (50, 1000):  # never a valid candidate: torchvision's centre crop at the largest ratio
        assert fall_ours == 1.0 and (ours == [[0, (W - 67) // 2, 50, 67]]).all()
    if hw == (60, 600):
        assert 0.3 < fall_ours < 0.95


def test_flip_colour_blur_solarize_rates_and_ranges():
    spec = ViewSpec(size=32, flip_p=0.5, jitter_p=0.8, jitter=(0.4, 0.4, 0.2, 0.1), gray_p=0.2, blur_p=0.3,
                    blur_sigma=(0.1, 2.0), solarize_p=0.2)
    n = 4000
    p = sample_view_params(Recipe("t", (spec,), MEAN, STD), torch.tensor([[64, 80]] * n),
                           torch.Generator().manual_seed(5))[0]
    for flag, rate in ((p.flip, 0.5), (p.jitter, 0.8), (p.gray, 0.2), (p.blur, 0.3), (p.solarize, 0.2)):
        assert flag.dtype == torch.bool and abs(flag.float().mean().item() - rate) < 0.03
    on, off = p.jitter, ~p.jitter
    for v, (lo, hi) in ((p.brightness, (0.6, 1.4)), (p.contrast, (0.6, 1.4)), (p.saturation, (0.8, 1.2)),
                        (p.hue, (-0.1, 0.1))):
        assert v[on].min() >= lo and v[on].max() <= hi
        assert v[on].min() < lo + 0.01 and v[on].max() > hi - 0.01 and v[on].std() > (hi - lo) / 4
    assert (p.brightness[off] == 1).all() and (p.contrast[off] == 1).all() and (p.saturation[off] == 1).all()
    assert (p.hue[off] == 0).all() and (p.sigma[~p.blur] == 0).all()
    assert p.sigma[p.blur].min() >= 0.1 and p.sigma[p.blur].max() <= 2.0
    # the parameters are independent of each other (one uniform column each)
    assert abs(np.corrcoef(p.brightness[on].numpy(), p.contrast[on].numpy())[0, 1]) < 0.06


def test_same_seed_same_params_and_views_other_seed_differs():
    recipe = dino_recipe(32, 16, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    canvas, sizes = canvas_of([texture(50, 40, 20), texture(33, 70, 21), texture(64, 64, 22)])
    runs = []
    for seed in (7, 7, 8):
        params = sample_view_params(recipe, sizes, torch.Generator().manual_seed(seed))
        runs.append((params, apply_views(canvas, sizes, params, recipe)))
    (pa, va), (pb, vb), (pc, vc) = runs
    for x, y in zip(pa, pb):
        assert all(torch.equal(getattr(x, k), getattr(y, k)) for k in vars(x))
    assert all(torch.equal(x, y) for x, y in zip(va, vb))
    assert not all(torch.equal(x, y) for x, y in zip(va, vc))


# ------------------------------------------------------------------------------------------ batching, contract

def test_padded_canvas_equals_each_image_processed_alone():
    spec = ViewSpec(size=20, scale=(0.2, 1.0), flip_p=0.5, jitter_p=0.6, gray_p=0.3, blur_p=0.5,
                    blur_sigma=(0.1, 2.0), solarize_p=0.5)
    small = ViewSpec(size=12, scale=(0.05, 0.4), flip_p=0.5, jitter_p=0.6, gray_p=0.3, blur_p=0.5,
                     blur_sigma=(0.1, 1.5), solarize_p=0.3)
    recipe = Recipe("t", (spec, spec, small), MEAN, STD)
    imgs = [texture(37, 53, 30), texture(80, 20, 31), texture(64, 64, 32), texture(23, 91, 33),
            texture(100, 70, 34)]
    canvas, sizes = canvas_of(imgs)
    params = sample_view_params(recipe, sizes, torch.Generator().manual_seed(3))
    views = apply_views(canvas, sizes, params, recipe)
    for b, img in enumerate(imgs):
        alone = apply_views(img[None], sizes[b:b + 1], [_slice(p, b) for p in params], recipe)
        for v, a in zip(views, alone):
            torch.testing.assert_close(v[b], a[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["mocov3", "dino"])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_layout_dtype_shapes_and_value_range(kind, out_dtype):
    recipe = (mocov3_recipe(32, 0.2, MEAN, STD) if kind == "mocov3"
              else dino_recipe(32, 16, 4, (0.4, 1.0), (0.05, 0.4), MEAN, STD))
    canvas, sizes = canvas_of([texture(48, 60, 40), texture(70, 35, 41), texture(40, 40, 42)])
    params = sample_view_params(recipe, sizes, torch.Generator().manual_seed(0))
    assert len(params) == len(recipe.views) and params[0].top.shape == (3,)
    views = apply_views(canvas, sizes, params, recipe, out_dtype=out_dtype)
    assert [tuple(v.shape) for v in views] == [(3, 3, s, s) for s in recipe.sizes]
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    for v in views:
        assert v.dtype == out_dtype and v.is_contiguous(memory_format=torch.channels_last)
        f = v.float()
        assert (f.amin((0, 2, 3)) >= lo - 2e-2).all() and (f.amax((0, 2, 3)) <= hi + 2e-2).all()
    if out_dtype == torch.bfloat16:
        ref = apply_views(canvas, sizes, params, recipe)
        for v, r in zip(views, ref):
            torch.testing.assert_close(v.float(), r, atol=0.02, rtol=0.01)


@pytest.mark.parametrize("spec", [eval_spec(32), EvalSpec(size=24, resize=28), eval_spec(32, "bicubic"),
                                  EvalSpec(size=24, resize=28, interpolation="bicubic")])
def test_eval_views_match_the_reference_apply_eval(spec):
    # (40, 50): long side 35, crop offset 5.5 -> 6; (66, 56): 33, offset 4.5 -> 4 (round half to even)
    imgs = [texture(40, 50, 50), texture(66, 56, 51), texture(70, 33, 52), texture(24, 24, 53)]
    canvas, sizes = canvas_of(imgs)
    out = eval_views(canvas, sizes, spec, MEAN, STD)
    assert out.shape == (4, 3, spec.size, spec.size) and out.is_contiguous(memory_format=torch.channels_last)
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for b, img in enumerate(imgs):
        ref = apply_eval(img, spec, m, s)
        gap = ((out[b] - ref) * s).abs()  # on the [0, 1] scale
        bound = U8_MAX_GAP if spec.interpolation == "bilinear" else 1.1 / 255  # bicubic: measured 1.06 levels
        assert gap.mean() <= U8_MEAN_GAP and gap.max() <= bound, (b, gap.mean() * 255, gap.max() * 255)
    half = eval_views(canvas, sizes, spec, torch.tensor(MEAN), torch.tensor(STD), out_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(half.float(), out, atol=0.02, rtol=0.01)


def test_apply_path_has_no_host_sync_calls():
    """No .item()/.tolist()/float(t)/int(t)/.cpu()/.numpy()/torch.tensor(...) in the functions a step runs."""
    funcs = [aug.sample_view_params, aug._rrc_boxes, aug.apply_views, aug.eval_views, aug._aa_weights, aug._filter,
             aug._resample, aug._color_jitter, aug._hue_shift, aug._gaussian_blur, aug._normalise,
             aug._per_channel, aug._gray, aug._blend]
    bad = re.compile(r"\.item\(|\.tolist\(|\bfloat\(|\bint\(|\bbool\(|\.cpu\(|\.numpy\(|torch\.tensor\(|nonzero|\.any\(\)")
    for fn in funcs:
        code = "\n".join(line.split("#")[0] for line in inspect.getsource(fn).splitlines())
        code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings
        assert not bad.search(code), (fn.__name__, bad.search(code).group(0))
