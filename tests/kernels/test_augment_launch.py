"""The host side of the Triton augmentation (sdmp_fast.kernels.augment): launch groups and the crop's tap bound."""
from __future__ import annotations

import dataclasses
import math

import pytest

from sdmp_fast.augment.recipes import Recipe, ViewSpec, dino_recipe
from sdmp_fast.kernels.augment import crop_tiling, launch_plan, view_groups

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_views_of_one_size_but_two_filters_launch_apart():
    bilinear, bicubic = ViewSpec(size=16), ViewSpec(size=16, interpolation="bicubic")
    recipe = Recipe("t", (bilinear, bicubic, bilinear, ViewSpec(size=8, interpolation="bicubic")), MEAN, STD)
    assert view_groups(recipe) == [[0, 2], [1], [3]]
    assert launch_plan([bicubic], 40)["crop"]["CUBIC"] and not launch_plan([bilinear], 40)["crop"]["CUBIC"]
    with pytest.raises(ValueError, match="one filter"):
        launch_plan([bilinear, bicubic], 40)
    dino = dino_recipe(32, 16, 4, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    assert view_groups(dino) == [[0, 1], [2, 3, 4, 5]]  # DINO: every view bicubic, as before grouped by size
    mixed = dataclasses.replace(dino, views=dino.views[:1] + (dataclasses.replace(dino.views[1],
                                                                                  interpolation="bilinear"),))
    assert view_groups(mixed) == [[0], [1]]


@pytest.mark.parametrize("cubic", [False, True])
def test_the_column_tap_bound_covers_the_filters_reach(cubic):
    """Taps of a box as wide as the canvas: from floor(c - r) to the last pixel centre before c + r, r = support x
    stretch (support 1 for the triangle, 2 for the cubic): at most floor(2 r) + 2."""
    for wmax, s in ((500, 224), (500, 96), (37, 16), (16, 16), (9, 24)):
        _, kx = crop_tiling(wmax, s, cubic)
        r = (2 if cubic else 1) * max(wmax / s, 1.0)
        assert kx >= math.floor(2 * r) + 2, (wmax, s, kx)
    assert crop_tiling(500, 224, True)[1] == 2 * crop_tiling(500, 224, False)[1]  # 16 and 8
