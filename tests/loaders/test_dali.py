"""The DALI loader on CPU (device_id=None): the same graph that runs on a GPU with device="mixed".

Pipelines are tiny and built per test (a build takes milliseconds); the folder fixtures are per module.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import crop_fractions, plain_view, require
from planted import old_dali_brightness_contrast

from sdmp_fast.augment.recipes import Recipe, dino_recipe, mocov3_recipe
from sdmp_fast.config import load_config
from sdmp_fast.data.folders import scan_folder
from sdmp_fast.data.sharding import rank_batches

pytestmark = pytest.mark.dali
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dali():
    require("nvidia.dali", "dali")
    import loaders.dali as mod
    return mod


@pytest.fixture(scope="module")
def split(image_folder):
    return scan_folder(image_folder / "train")[0]


@pytest.fixture(scope="module")
def coord_split(tmp_path_factory):
    """Images whose red channel encodes x and green channel y (0..255 across the image), 120 x 80 px."""
    from PIL import Image
    root = tmp_path_factory.mktemp("coords")
    H, W = 80, 120
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    img = np.stack([xs * 255 / (W - 1), ys * 255 / (H - 1), np.full_like(xs, 128.0)], -1).round().astype(np.uint8)
    (root / "c0").mkdir()
    for i in range(64):
        Image.fromarray(img).save(root / "c0" / f"{i:03d}.jpg", quality=98)
    return scan_folder(root)[0]


def _loader(dali, split, recipe, gb=8, rank=0, world=1, seed=0):
    return dali.DaliLoader(split, recipe, gb, rank, world, CPU, seed=seed, threads=1)


def _first(ld, epoch=0):
    ld.set_epoch(epoch)
    return next(iter(ld))


@pytest.mark.parametrize("kind", ["mocov3", "dino"])
def test_views_follow_the_batch_contract_and_the_torch_loaders_sample_order(dali, split, kind):
    recipe = (mocov3_recipe(32, 0.2, MEAN, STD) if kind == "mocov3"
              else dino_recipe(32, 16, 4, (0.4, 1.0), (0.05, 0.4), MEAN, STD))
    ld = _loader(dali, split, recipe, gb=8, rank=1, world=2)
    assert len(ld) == len(split) // 8
    ld.set_epoch(1)
    batches = list(ld)
    assert len(batches) == len(ld)
    expected = rank_batches(len(split), 8, 1, 2, seed=0, epoch=1)
    for b, ids in zip(batches, expected):
        b.check()
        assert b.index.tolist() == ids
        assert b.label.tolist() == [split.samples[i][1] for i in ids]
        assert [tuple(v.shape) for v in b.views] == [(4, 3, s, s) for s in recipe.sizes]
        for v in b.views:
            assert v.dtype == torch.float32 and v.is_contiguous(memory_format=torch.channels_last)
            lo = min((0 - m) / s for m, s in zip(MEAN, STD))
            hi = max((1 - m) / s for m, s in zip(MEAN, STD))
            assert lo - 1e-4 <= float(v.min()) and float(v.max()) <= hi + 1e-4


def test_deterministic_under_a_seed_and_resumable_at_a_step(dali, split):
    recipe = mocov3_recipe(32, 0.2, MEAN, STD)
    a, b, c = (_first(_loader(dali, split, recipe, seed=s)) for s in (3, 3, 4))
    assert all(torch.equal(x, y) for x, y in zip(a.views, b.views)) and torch.equal(a.index, b.index)
    assert not torch.equal(a.index, c.index)
    ld = _loader(dali, split, recipe, seed=3)
    ld.set_epoch(0, start_step=2)
    assert next(iter(ld)).index.tolist() == rank_batches(len(split), 8, 0, 1, seed=3, epoch=0)[2]


def test_several_epochs_in_a_row(dali, split):
    ld = _loader(dali, split, mocov3_recipe(16, 0.2, MEAN, STD))
    seen = []
    for epoch in range(3):
        ld.set_epoch(epoch)
        ids = [i for b in ld for i in b.index.tolist()]
        assert len(ids) == len(ld) * 8 and len(set(ids)) == len(ids)
        seen.append(ids)
    assert seen[0] != seen[1] != seen[2]


def test_crop_scale_and_aspect_ranges(dali, coord_split):
    scale, ratio = (0.25, 0.6), (0.75, 1.333)
    recipe = Recipe("t", (plain_view(32, scale, ratio),), MEAN, STD)
    ld = _loader(dali, coord_split, recipe, gb=64)
    wf, hf, flipped = crop_fractions(_first(ld).views[0], recipe)
    area = wf * hf
    aspect = (wf * 120) / (hf * 80)
    assert not flipped.any()
    # JPEG and the resize filter blur the encoded coordinates by a few levels: small tolerances
    assert float(area.min()) >= scale[0] - 0.04 and float(area.max()) <= scale[1] + 0.04
    assert float(aspect.min()) >= ratio[0] - 0.06 and float(aspect.max()) <= ratio[1] + 0.08
    assert float(area.max() - area.min()) > 0.15  # the range is used, not one fixed box


def test_flip_frequency(dali, coord_split):
    recipe = Recipe("t", (plain_view(16, (0.9, 1.0), flip_p=0.5),) * 4, MEAN, STD)
    views = _first(_loader(dali, coord_split, recipe, gb=64)).views
    rate = float(torch.cat([crop_fractions(v, recipe)[2] for v in views]).float().mean())
    assert 0.38 <= rate <= 0.62  # 256 coins: 5 standard deviations


def test_statistics_close_to_the_torch_loader(dali, split):
    from loaders.torch_folder import FolderLoader
    recipe = mocov3_recipe(32, 0.2, MEAN, STD)
    out = {}
    for name, ld in (("dali", _loader(dali, split, recipe, gb=12)),
                     ("torch", FolderLoader(split, recipe, 12, 0, 1, CPU, seed=0, num_workers=0))):
        ld.set_epoch(0)
        views = torch.cat([torch.cat(b.views) for b in ld])
        out[name] = (views.mean(dim=(0, 2, 3)), views.std(dim=(0, 2, 3)))
    assert torch.allclose(out["dali"][0], out["torch"][0], atol=0.15), out
    assert torch.allclose(out["dali"][1], out["torch"][1], rtol=0.15), out


def test_fp16_needs_a_gpu_and_bad_sizes_are_refused(dali, split):
    from sdmp_fast.data.folders import DataError
    with pytest.raises(DataError, match="dali_fp16 needs a CUDA"):
        dali.DaliLoader(split, mocov3_recipe(32, 0.2, MEAN, STD), 8, 0, 1, CPU, fp16=True)
    with pytest.raises(DataError, match="fewer than one global batch"):
        dali.DaliLoader(split, mocov3_recipe(32, 0.2, MEAN, STD), 4096, 0, 1, CPU)


@pytest.mark.parametrize("extra", [
    ["sdmp.enabled=true"],
    ["method.name=dino", "model.backbone=vit_tiny_p4_dyn", "data.local_crops=2", "method.dino_out_dim=64",
     "method.dino_hidden_dim=64", "method.dino_bottleneck_dim=32"],
], ids=["mocov3_sdmp", "dino_sdmp"])
def test_two_step_cli_runs(dali, image_folder, tmp_path, extra):
    from sdmp_fast.pretrain import run
    root = Path(__file__).resolve().parents[2]
    summary = run(["--config", str(root / "configs" / "smoke.yaml"), "--loader", "dali", "--data", str(image_folder),
                   "--out", str(tmp_path / "run"), "data.dali_threads=1", *extra], progress=False)
    assert summary["steps"] == 2 and load_config(None, []).data.loader == "torch"


@pytest.mark.gpu
def test_gpu_pipeline_decodes_and_augments_on_the_gpu(dali, split):
    cuda = torch.device("cuda", torch.cuda.current_device())
    recipe = dino_recipe(32, 16, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    ld = dali.DaliLoader(split, recipe, 8, 0, 1, cuda, seed=0, threads=2)
    ld.set_epoch(0)
    b = next(iter(ld))
    b.check()
    assert all(v.device.type == "cuda" for v in b.views) and b.index.device.type == "cuda"
    assert b.index.tolist() == rank_batches(len(split), 8, 0, 1, seed=0, epoch=0)[0]
    cpu = _first(_loader(dali, split, recipe))
    for g, c in zip(b.views, cpu.views):  # other draws, same distribution: loose statistics only
        assert abs(float(g.mean()) - float(c.mean())) < 0.5
    fp16 = dali.DaliLoader(split, recipe, 8, 0, 1, cuda, seed=0, threads=2, fp16=True)
    fp16.set_epoch(0)
    assert next(iter(fp16)).views[0].dtype == torch.float16


# ----------------------------------------------------------------------------------------------- the GPU graphs

GPU_GRAPHS = ["mocov3", "mocov3+sdmp", "mocov3+sdmp-extra", "dino", "dino+sdmp", "mocov3+sdmp-shards", "dino-fp16"]


@pytest.mark.parametrize("name", GPU_GRAPHS)
def test_every_training_graph_is_defined_for_the_gpu(dali, name):
    """What `--loader dali` defines on a GPU (device cuda:0, not built): the decoder mixed, every op after it on
    the GPU (the doctor's check, one graph per test), each crop resized with its view's filter: DINO's bicubic,
    MoCo v3's bilinear."""
    from sdmp_fast.health.dali_graphs import GRAPHS, check_gpu_graph, define_gpu_graph
    assert set(GRAPHS) == set(GPU_GRAPHS)
    assert check_gpu_graph(name) > 20
    pipe, recipe = define_gpu_graph(name)
    filters = dali.crop_filters(pipe)
    assert filters == [v.interpolation for v in recipe.views]
    assert set(filters) == {"bicubic" if name.startswith("dino") else "bilinear"}


def test_the_old_contrast_centre_fails_the_gpu_definition(dali, monkeypatch):
    from sdmp_fast.health.dali_graphs import check_gpu_graph
    monkeypatch.setattr(dali, "_brightness_contrast", old_dali_brightness_contrast)
    with pytest.raises(ValueError, match="contrast_center"):
        check_gpu_graph("mocov3")


def test_a_graph_that_decodes_on_the_cpu_is_refused(dali, monkeypatch):
    import sdmp_fast.health.dali_graphs as graphs
    from sdmp_fast.data.folders import Split
    split = Split(root=Path("/none"), classes=("c0",), samples=tuple((f"/none/{i}.jpg", 0) for i in range(16)))

    def on_the_cpu(name, batch=8):
        recipe = mocov3_recipe(32, 0.2, MEAN, STD)
        return dali.DaliLoader(split, recipe, batch, 0, 1, CPU, threads=1).pipeline(list(range(batch))), recipe
    monkeypatch.setattr(graphs, "define_gpu_graph", on_the_cpu)
    with pytest.raises(AssertionError, match="decoders__Image.*cpu"):
        graphs.check_gpu_graph("mocov3")


# DALI's crop vs PIL's crop + resize (levels), measured on edges_image(64, 64) resized to 24 and 96 px: within a
# level away from the border and the checkerboard for both filters; DALI's cubic is PIL's (a = -0.5, widened when
# downscaling; within a level of torch's float antialiased bicubic) but does not clip its first pass to [0, 255]
# as PIL does: 27 levels through the upscaled checkerboard; at the border its filter is not renormalised like
# PIL's: up to 6 levels (bilinear, downscaled 2.7x)
DALI_PIL_AWAY, DALI_PIL_MAX, DALI_PIL_MEAN = 1.0, 28.0, 0.6  # measured 1, 27, 0.50
DALI_OTHER_FILTER_MEAN = 1.5  # the other filter's PIL resize: measured 1.72 or more


def test_crops_resize_with_the_specs_filter_close_to_pil(dali):
    """A whole-image crop of a known image through augment_view (CPU graph, no colour op, mean 0, std 1/255: the
    view is the resized crop) against PIL's bilinear and bicubic resize."""
    from images import edges_image, pil_resized_crop
    from nvidia.dali import fn, pipeline_def

    from sdmp_fast.augment.recipes import ViewSpec
    n = 64
    img = edges_image(n, n)
    hwc = img.permute(1, 2, 0).contiguous().numpy()
    for interpolation in ("bilinear", "bicubic"):
        other = "bicubic" if interpolation == "bilinear" else "bilinear"
        for size in (24, 96):
            spec = ViewSpec(size=size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0,
                            interpolation=interpolation)

            @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0)
            def view():
                x = fn.external_source(source=lambda: [hwc], layout="HWC", batch=True)
                return dali.augment_view(x, spec, (0.0, 0.0, 0.0), (1 / 255,) * 3)
            pipe = view()
            pipe.build()
            out = torch.from_numpy(np.asarray(pipe.run()[0][0])).permute(2, 0, 1)
            gap = (out - pil_resized_crop(img, (0, 0, n, n), size, interpolation).float()).abs()
            # away from the border and the checkerboard (rows n/4..n/2, columns n/3..2n/3) by the filter's reach
            reach = 2 * max(n / size, 1) + 1
            c = (torch.arange(size) + 0.5) * n / size  # output pixel centres in input pixels
            border = (c < reach) | (c > n - reach)
            board = ((c > n // 4 - reach) & (c < n // 2 + reach))[:, None] & ((c > n // 3 - reach) &
                                                                             (c < 2 * n // 3 + reach))[None, :]
            away = ~(board | border[:, None] | border[None, :])
            what = (interpolation, size, float(gap.max()), float(gap[:, away].max()), float(gap.mean()))
            assert gap[:, away].max() <= DALI_PIL_AWAY and gap.max() <= DALI_PIL_MAX, what
            assert gap.mean() <= DALI_PIL_MEAN, what
            to_other = (out - pil_resized_crop(img, (0, 0, n, n), size, other).float()).abs().mean()
            assert to_other >= DALI_OTHER_FILTER_MEAN, (what, float(to_other))


def test_brightness_contrast_equals_dalis_operator_on_the_cpu(dali):
    """The expression that replaced fn.brightness_contrast (whose centre argument cannot be a GPU node) gives
    the operator's result on the CPU, within one level of rounding."""
    from nvidia.dali import fn, pipeline_def
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(4)]

    @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=3)
    def both():
        x = fn.external_source(source=lambda: images, layout="HWC", batch=True)
        b = fn.random.uniform(range=[0.6, 1.4])
        c = fn.random.uniform(range=[0.6, 1.4])
        return dali._brightness_contrast(x, b, c), old_dali_brightness_contrast(x, b, c)
    pipe = both()
    pipe.build()
    new, old = (np.stack([np.asarray(t) for t in out]) for out in pipe.run())
    assert new.dtype == old.dtype == np.uint8
    assert np.abs(new.astype(int) - old.astype(int)).max() <= 1
    assert (new != np.stack(images)).any()  # the factors did something
