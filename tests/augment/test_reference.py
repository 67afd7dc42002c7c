"""The per-sample reference augmentation: torchvision's RandomResizedCrop sampling and each view op."""
import math

import numpy as np
import pytest
import torch
from images import edges_image, pil_resized_crop

from sdmp_fast.augment.recipes import ViewSpec
from sdmp_fast.augment.reference import apply_view, rrc_params


def test_rrc_scale_and_aspect_follow_torchvision():
    g = torch.Generator().manual_seed(0)
    H, W = 375, 500
    areas, ratios = [], []
    for _ in range(2000):
        t, l, h, w = rrc_params(H, W, (0.08, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= t and t + h <= H and 0 <= l and l + w <= W
        areas.append(h * w / (H * W))
        ratios.append(w / h)
    areas, ratios = np.array(areas), np.array(ratios)
    assert areas.min() >= 0.07 and areas.max() <= 1.0
    assert np.log(ratios).min() >= math.log(3 / 4) - 0.02 and np.log(ratios).max() <= math.log(4 / 3) + 0.02
    # torchvision's own sampler on the same problem gives the same area distribution
    import torchvision.transforms as T
    torch.manual_seed(0)
    tv = [T.RandomResizedCrop.get_params(torch.empty(1, H, W), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)]
    tv_areas = np.array([h * w / (H * W) for _, _, h, w in tv])
    assert abs(np.median(areas) - np.median(tv_areas)) < 0.04
    assert abs(areas.mean() - tv_areas.mean()) < 0.03


def test_view_ops_flip_and_identity():
    img = torch.randint(0, 256, (3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    mean, std = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    plain = ViewSpec(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    out = apply_view(img, plain, torch.Generator().manual_seed(0), mean, std)
    assert torch.allclose(out * 255, img.float(), atol=1e-3)  # full-image crop at the same size is the identity
    flip = ViewSpec(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, jitter_p=0.0, gray_p=0.0)
    flipped = apply_view(img, flip, torch.Generator().manual_seed(0), mean, std)
    assert torch.equal(flipped, out.flip(-1))
    gray = ViewSpec(size=16, scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=1.0)
    g_out = apply_view(img, gray, torch.Generator().manual_seed(0), mean, std)
    assert torch.equal(g_out[0], g_out[1]) and torch.equal(g_out[1], g_out[2])
    sol = ViewSpec(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, solarize_p=1.0)
    s_out = apply_view(img, sol, torch.Generator().manual_seed(0), mean, std)
    assert torch.allclose(s_out, torch.where(out >= 128 / 255, 1 - out, out), atol=1e-6)


# (top, left, h, w) and view size: downscale, upscale through the checkerboard, a thin box, the whole image
PIL_BOXES = [((5, 7, 50, 70), 24), ((10, 20, 13, 17), 40), ((3, 4, 30, 11), 29), ((0, 0, 61, 83), 32)]
REF_PIL_MAX = 1  # levels; measured max 1 for both filters (torch's uint8 path rounds like PIL's, not bit for bit)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_the_crop_resize_is_pils_bilinear_or_bicubic(monkeypatch, interpolation):
    """MoCo v3 resizes its crops with PIL's bilinear filter, DINO with PIL's bicubic (main_dino.py): the reference
    view of a spec of each interpolation equals PIL's ``img.crop(box).resize(size, filter)`` within a level."""
    import sdmp_fast.augment.reference as reference
    img = edges_image(61, 83)
    mean, std = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    for box, size in PIL_BOXES:
        monkeypatch.setattr(reference, "rrc_params", lambda *a, box=box: box)
        spec = ViewSpec(size=size, flip_p=0.0, jitter_p=0.0, gray_p=0.0, interpolation=interpolation)
        out = apply_view(img, spec, torch.Generator().manual_seed(0), mean, std) * 255
        pil = pil_resized_crop(img, box, size, interpolation).float()
        assert (out - out.round()).abs().max() < 1e-3  # uint8 values: the view is the resized crop itself
        assert (out - pil).abs().max() <= REF_PIL_MAX, (box, float((out - pil).abs().max()))
    other = "bilinear" if interpolation == "bicubic" else "bicubic"
    assert (out - pil_resized_crop(img, box, size, other).float()).abs().max() > 10 * REF_PIL_MAX  # the filters differ
