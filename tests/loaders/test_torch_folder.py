"""The torch reference loader: the Batch contract, determinism across workers and resumes, multi-crop, class subsets."""
import numpy as np
import pytest
import torch

from loaders.torch_folder import FolderLoader
from sdmp_fast.augment.recipes import dino_recipe, mocov3_recipe
from sdmp_fast.augment.reference import rrc_params
from sdmp_fast.data.folders import scan_folder
from sdmp_fast.data.sharding import steps_per_epoch
from sdmp_fast.streams import sample_generator

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


def test_sample_generator_depends_only_on_seed_epoch_index():
    a = torch.rand(4, generator=sample_generator(1, 2, 3))
    assert torch.equal(a, torch.rand(4, generator=sample_generator(1, 2, 3)))
    assert not torch.equal(a, torch.rand(4, generator=sample_generator(1, 2, 4)))
    assert not torch.equal(a, torch.rand(4, generator=sample_generator(1, 3, 3)))


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


def test_on_a_gpu_the_loader_pins_its_batches(split, monkeypatch):
    """With a CUDA device the DataLoader pins (pin_memory=True) through Batch.pin_memory; the accelerator is
    faked so that torch's single-process path pins on this CPU machine, and the pinning is recorded."""
    from sdmp_fast.batch import Batch
    pinned = []
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("cuda"))
    monkeypatch.setattr(Batch, "pin_memory", lambda self: pinned.append(self.size) or self)
    ld = FolderLoader(split, _recipe(), 8, 0, 1, torch.device("cuda"), seed=3, num_workers=0)
    ld.set_epoch(0)
    host = list(ld.loader)  # what the DevicePrefetcher copies to the GPU
    assert ld.loader.pin_memory and pinned == [8] * len(host) == [8] * len(ld)


@pytest.mark.gpu
def test_gpu_batches_arrive_pinned_and_on_the_device(split):
    ld = FolderLoader(split, _recipe(), 8, 0, 1, torch.device("cuda"), seed=3, num_workers=1)
    ld.set_epoch(0)
    assert all(t.is_pinned() for t in next(iter(ld.loader)).tensors())
    for b in ld:
        b.check()
        assert all(t.device.type == "cuda" for t in b.tensors())
