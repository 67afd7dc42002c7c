import dataclasses

import pytest

from sdmp_fast.config import load_config
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.augment.recipes import dino_recipe

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_dino_recipe_views_in_batch_order():
    r = dino_recipe(224, 96, 8, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    assert r.sizes == (224, 224) + (96,) * 8  # globals first, then locals: grouped by resolution
    g1, g2, loc = r.views[0], r.views[1], r.views[2]
    assert (g1.blur_p, g1.solarize_p, g2.blur_p, g2.solarize_p, loc.blur_p, loc.solarize_p) == (1.0, 0.0, 0.1, 0.2, 0.5, 0.0)
    assert g1.scale == g2.scale == (0.4, 1.0) and loc.scale == (0.05, 0.4)
    for v in r.views:
        assert v.blur_sigma == (0.1, 2.0)  # DINO's sigma at 224/96 px, locals included
        assert (v.jitter, v.jitter_p, v.gray_p, v.flip_p) == ((0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 0.5)
    small = dino_recipe(32, 16, 4, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    assert small.sizes == (32, 32, 16, 16, 16, 16)
    assert small.views[-1].blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
    assert dino_recipe(32, 16, 0, (0.4, 1.0), (0.05, 0.4), MEAN, STD).sizes == (32, 32)


def test_method_recipe_follows_the_config():
    cfg = load_config(overrides=["method.name=dino", "data.local_crops=6", "data.local_size=12", "data.local_scale=[0.1, 0.3]"])
    r = method_recipe(cfg)
    assert r.name == "dino" and r.sizes == (32, 32) + (12,) * 6 and r.views[-1].scale == (0.1, 0.3)
    assert method_recipe(load_config()).sizes == (32, 32)  # MoCo v3 ignores the local crops


def test_blur_half_is_the_static_kernel_radius_of_the_largest_sigma():
    r = dino_recipe(224, 96, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    assert [v.blur_half for v in r.views] == [6, 6, 6, 6]  # ceil(3 * 2.0): every view blurs with p > 0
    no_blur = dataclasses.replace(r.views[0], blur_p=0.0)
    assert no_blur.blur_half == 0
