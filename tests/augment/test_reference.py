"""The per-sample reference augmentation: torchvision's RandomResizedCrop sampling and each view op."""
import math

import numpy as np
import torch

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
