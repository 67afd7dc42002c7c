import math

import numpy as np
import pytest
import torch

from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from loaders.synthetic import SyntheticLoader
from loaders.torch_folder import FolderLoader
from sdmp_fast.augment.reference import apply_view, rrc_params
from sdmp_fast.streams import sample_generator
from sdmp_fast.data.folders import scan_folder
from sdmp_fast.augment.recipes import ViewSpec, dino_recipe, mocov3_recipe

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def split(image_folder):
    return scan_folder(image_folder / "train")[0]


def _recipe(size=24):
    return mocov3_recipe(size, 0.2, MEAN, STD)


def _batches(split, workers, epoch=0, start=0, world=1, rank=0, gb=8):
    ld = FolderLoader(split, _recipe(), gb, rank, world, torch.device("cpu"), seed=3, num_workers=workers)
    ld.set_epoch(epoch, start)
    return list(ld)


def test_batch_contract_shapes_layout_ranges(split):
    batches = _batches(split, workers=0)
    assert len(batches) == steps_per_epoch(len(split), 8) == 4  # 36 images, full batches only
    for b in batches:
        b.check()
        assert len(b.views) == 2 and b.views[0].shape == (8, 3, 24, 24) and b.views[0].dtype == torch.float32
        assert b.views[0].is_contiguous(memory_format=torch.channels_last)
        lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
        hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
        for v in b.views:
            assert (v.amin((0, 2, 3)) >= lo - 1e-5).all() and (v.amax((0, 2, 3)) <= hi + 1e-5).all()
        assert torch.equal(b.label, torch.tensor([split.samples[i][1] for i in b.index.tolist()]))
    ids = torch.cat([b.index for b in batches])
    assert len(set(ids.tolist())) == 32  # no repeats within an epoch


def test_determinism_independent_of_workers_and_resume(split):
    a = _batches(split, workers=0, epoch=1)
    b = _batches(split, workers=2, epoch=1)
    for x, y in zip(a, b):
        assert torch.equal(x.index, y.index)
        for vx, vy in zip(x.views, y.views):
            assert torch.equal(vx, vy)
    resumed = _batches(split, workers=0, epoch=1, start=2)
    assert len(resumed) == 2 and torch.equal(resumed[0].views[1], a[2].views[1])
    other_epoch = _batches(split, workers=0, epoch=2)
    assert not torch.equal(other_epoch[0].index, a[0].index)


def test_sharding_disjoint_cover_equal_steps():
    n, gb, world = 103, 12, 3
    per_rank = [rank_batches(n, gb, r, world, seed=1, epoch=0) for r in range(world)]
    assert {len(p) for p in per_rank} == {n // gb}
    flat = [i for p in per_rank for b in p for i in b]
    assert len(flat) == len(set(flat)) == (n // gb) * gb
    assert all(len(b) == gb // world for p in per_rank for b in p)


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


def test_sample_generator_depends_only_on_seed_epoch_index():
    a = torch.rand(4, generator=sample_generator(1, 2, 3))
    assert torch.equal(a, torch.rand(4, generator=sample_generator(1, 2, 3)))
    assert not torch.equal(a, torch.rand(4, generator=sample_generator(1, 2, 4)))
    assert not torch.equal(a, torch.rand(4, generator=sample_generator(1, 3, 3)))


def test_synthetic_loader_contract():
    recipe = mocov3_recipe(32, 0.2, MEAN, STD, num_views=4)
    ld = SyntheticLoader(recipe, global_batch=8, rank=1, world=2, device=torch.device("cpu"), seed=0, num_samples=40)
    assert len(ld) == 5 and ld.batch_size == 4
    ld.set_epoch(0, 3)
    bs = list(ld)
    assert len(bs) == 2
    for b in bs:
        b.check()
        assert len(b.views) == 4 and b.views[0].shape == (4, 3, 32, 32)
    ld.set_epoch(0, 3)
    assert torch.equal(next(iter(ld)).views[0], bs[0].views[0])


def test_multi_crop_batches_and_scale_ranges(split):
    """DINO's recipe through the reference loader: 2 global + L local views of two sizes, in order."""
    recipe = dino_recipe(24, 12, 3, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    ld = FolderLoader(split, recipe, 8, 0, 1, torch.device("cpu"), seed=3, num_workers=0)
    ld.set_epoch(0)
    b = next(iter(ld))
    b.check()
    assert [tuple(v.shape) for v in b.views] == [(8, 3, 24, 24)] * 2 + [(8, 3, 12, 12)] * 3
    g = torch.Generator().manual_seed(0)
    H, W = 375, 500
    for spec, (lo, hi) in ((recipe.views[0], (0.4, 1.0)), (recipe.views[2], (0.05, 0.4))):
        areas = np.array([h * w / (H * W) for _, _, h, w in
                          (rrc_params(H, W, spec.scale, spec.ratio, g) for _ in range(500))])
        assert areas.min() >= lo - 0.01 and areas.max() <= hi + 0.01
        assert areas.max() - areas.min() > 0.6 * (hi - lo)  # the whole range is used


def test_class_subset_applies_to_a_handed_in_split_and_a_beton_refuses_it(split, tmp_path):
    from sdmp_fast.config import ConfigError, load_config
    from sdmp_fast.registry import LOADERS
    subset = tmp_path / "classes.txt"
    subset.write_text("class_002\nclass_000\n")
    cfg = load_config(overrides={"data.class_subset": str(subset), "data.batch_size": 8, "data.num_workers": 0})
    loader = LOADERS.build("torch", cfg, _recipe(), split=split)  # scanned without the subset, as pretrain hands it
    assert loader.num_samples == 24 and loader.split.classes == ("class_000", "class_002")
    assert sorted(set(loader.split.labels.tolist())) == [0, 1]
    beton = load_config(overrides={"data.loader": "nvjpeg", "data.beton": str(tmp_path / "x.beton"),
                                   "data.class_subset": str(subset)})
    with pytest.raises(ConfigError, match=r"cannot be applied to the \.beton .*--class-subset FILE"):
        LOADERS.build("nvjpeg", beton, _recipe(), split=split)
