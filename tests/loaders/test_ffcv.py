"""The ffcv loader on CPU (no ToDevice), with ffcv's compiler switched off: the decoder and the order run as
plain Python over the same code ffcv would compile. The .beton files are built once per session."""
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_bicubic_views, crop_fractions, plain_view, require, with_filter

from sdmp_fast.augment.recipes import Recipe, dino_recipe, mocov3_recipe
from sdmp_fast.data.folders import DataError, scan_folder
from sdmp_fast.data.sharding import rank_batches

pytestmark = pytest.mark.ffcv
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CPU = torch.device("cpu")
COORD_SIZES = ((120, 80), (80, 120), (96, 96))  # (width, height)


@pytest.fixture(scope="module", autouse=True)
def ffcv_interpreted():
    require("ffcv", "ffcv")
    from ffcv.pipeline.compiler import Compiler
    was = Compiler.is_enabled
    Compiler.set_enabled(False)
    import loaders.ffcv_loader as mod
    yield mod
    Compiler.set_enabled(was)


@pytest.fixture(scope="module")
def coord_beton(tmp_path_factory):
    """Raw-mode .beton of images whose red channel encodes x, green y (0..255 across each image), blue 128."""
    from PIL import Image

    from loaders.write_beton import write_beton
    root = tmp_path_factory.mktemp("coords")
    (root / "c0").mkdir()
    for i in range(48):
        w, h = COORD_SIZES[i % len(COORD_SIZES)]
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        img = np.stack([xs * 255 / (w - 1), ys * 255 / (h - 1), np.full_like(xs, 128.0)], -1).round().astype(np.uint8)
        Image.fromarray(img).save(root / "c0" / f"{i:03d}.png")
    out = root / "coords.beton"
    write_beton(root, out, max_resolution=400, write_mode="raw", workers=1, progress=False)
    return out


def _loader(mod, path, recipe, gb=8, rank=0, world=1, seed=0, **kw):
    return mod.FfcvLoader(str(path), recipe, gb, rank, world, CPU, seed=seed, num_workers=1, **kw)


def test_canvas_holds_each_decoded_image_top_left(ffcv_interpreted, betons):
    import io

    from PIL import Image

    from loaders.beton import RAW, Beton
    for mode, (path, _) in betons.items():
        ld = _loader(ffcv_interpreted, path, mocov3_recipe(16, 0.2, MEAN, STD))
        ld.set_epoch(0)
        step, canvas, index, label = next(ld.decoded())
        ref = Beton(path)
        assert step == 0 and canvas.dtype == torch.uint8 and canvas.shape[-1] == 3
        assert label.tolist() == ref.ints("label")[index.numpy()].tolist()
        for b, i in enumerate(index.tolist()):
            m, h, w, data = ref.image(i)
            if m == RAW:  # raw mode: exact
                expect = torch.from_numpy(data.reshape(h, w, 3))
                assert torch.equal(canvas[b, :h, :w], expect)
            else:  # libjpeg-turbo in ffcv vs PIL: within JPEG decoder tolerance
                expect = torch.from_numpy(np.array(Image.open(io.BytesIO(data.tobytes())).convert("RGB")))
                assert canvas[b, :h, :w].shape == expect.shape
                assert (canvas[b, :h, :w].float() - expect.float()).abs().mean() < 2.0
        ref.close()


@pytest.mark.parametrize("kind", ["mocov3", "dino"])
def test_views_follow_the_contract_and_the_shared_sample_order(ffcv_interpreted, betons, image_folder, kind):
    split = scan_folder(image_folder / "train")[0]
    recipe = (mocov3_recipe(32, 0.2, MEAN, STD) if kind == "mocov3"
              else dino_recipe(32, 16, 4, (0.4, 1.0), (0.05, 0.4), MEAN, STD))
    for rank in (0, 1):  # two ranks: equal steps, disjoint samples, the torch loader's ids
        ld = _loader(ffcv_interpreted, betons["jpg"][0], recipe, gb=8, rank=rank, world=2)
        assert len(ld) == len(split) // 8
        ld.set_epoch(1)
        batches = list(ld)
        assert len(batches) == len(ld)
        for b, ids in zip(batches, rank_batches(len(split), 8, rank, 2, seed=0, epoch=1)):
            b.check()
            assert b.index.tolist() == ids
            assert b.label.tolist() == [split.samples[i][1] for i in ids]
            assert [tuple(v.shape) for v in b.views] == [(4, 3, s, s) for s in recipe.sizes]
            assert all(v.dtype == torch.float32 and v.is_contiguous(memory_format=torch.channels_last)
                       for v in b.views)


def test_deterministic_under_a_seed_and_resumable_at_a_step(ffcv_interpreted, betons):
    recipe = mocov3_recipe(32, 0.2, MEAN, STD)
    path = betons["raw"][0]

    def first(seed, start=0):
        ld = _loader(ffcv_interpreted, path, recipe, seed=seed)
        ld.set_epoch(0, start)
        return next(iter(ld))

    a, b, c = first(3), first(3), first(4)
    assert all(torch.equal(x, y) for x, y in zip(a.views, b.views)) and torch.equal(a.index, b.index)
    assert not torch.equal(a.index, c.index)
    ld = _loader(ffcv_interpreted, path, recipe, seed=3)
    ld.set_epoch(0)
    third = list(ld)[2]
    resumed = first(3, start=2)
    assert torch.equal(resumed.index, third.index)
    assert all(torch.equal(x, y) for x, y in zip(resumed.views, third.views))


def test_the_same_canvas_makes_the_same_views_as_the_nvjpeg_loader(ffcv_interpreted, betons):
    """ffcv's decode and the nvjpeg loader's read of the same raw .beton meet in one canvas_batch: equal views."""
    from loaders.beton import Beton
    from loaders.nvjpeg import NvjpegLoader
    recipe = dino_recipe(24, 12, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    path = betons["raw"][0]
    ffcv = _loader(ffcv_interpreted, path, recipe, seed=7)
    ffcv.set_epoch(1, 1)
    nvjpeg = NvjpegLoader(None, recipe, 8, 0, 1, CPU, seed=7, beton=Beton(path))
    nvjpeg.set_epoch(1, 1)
    a, b = next(iter(ffcv)), next(iter(nvjpeg))
    assert torch.equal(a.index, b.index) and torch.equal(a.label, b.label)
    for x, y in zip(a.views, b.views):  # canvases of other padding: zero weights, other summation order
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_a_dino_recipe_is_resized_bicubically(ffcv_interpreted, betons):
    """The loader hands its recipe to the batched augmentation: DINO's views are bicubic crops."""
    from sdmp_fast.augment import apply_views, sample_view_params
    from sdmp_fast.streams import step_generator
    recipe = dino_recipe(24, 12, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    assert {v.interpolation for v in recipe.views} == {"bicubic"}
    ld = _loader(ffcv_interpreted, betons["raw"][0], recipe, seed=5)
    ld.set_epoch(1)
    step, canvas, index, label = next(ld.decoded())
    views = ld.make_batch(step, canvas, index, label).views
    bilinear = _loader(ffcv_interpreted, betons["raw"][0], with_filter(recipe, "bilinear"), seed=5)
    bilinear.set_epoch(1)
    others = bilinear.make_batch(step, canvas, index, label).views
    sizes = ld.sizes[index.long()]
    params = sample_view_params(recipe, sizes, step_generator(5, 0, 1, step, CPU))
    assert_bicubic_views(views, apply_views(canvas.permute(0, 3, 1, 2), sizes, params, recipe), others)


def test_crops_are_relative_to_each_stored_image(ffcv_interpreted, coord_beton):
    """Scale and aspect ranges hold per image for three shapes (a swapped height/width or a box drawn on the
    canvas instead of the image would break them), and no canvas padding leaks into a view."""
    from loaders.beton import Beton
    scale, ratio = (0.25, 0.6), (0.75, 1.333)
    recipe = Recipe("t", (plain_view(32, scale, ratio),), MEAN, STD)
    ld = _loader(ffcv_interpreted, coord_beton, recipe, gb=48)
    ld.set_epoch(0)
    batch = next(iter(ld))
    wf, hf, flipped = crop_fractions(batch.views[0], recipe)
    ref = Beton(coord_beton)
    h = torch.from_numpy(ref.metadata["image"]["height"].astype(np.float32))[batch.index]
    w = torch.from_numpy(ref.metadata["image"]["width"].astype(np.float32))[batch.index]
    ref.close()
    assert set(zip(w.tolist(), h.tolist())) == {(float(a), float(b)) for a, b in COORD_SIZES}
    area, aspect = wf * hf, (wf * w) / (hf * h)
    assert not flipped.any()
    assert float(area.min()) >= scale[0] - 0.04 and float(area.max()) <= scale[1] + 0.04
    assert float(aspect.min()) >= ratio[0] - 0.06 and float(aspect.max()) <= ratio[1] + 0.08
    blue = batch.views[0][:, 2] * STD[2] + MEAN[2]
    assert float((blue * 255 - 128).abs().max()) < 1.0


def test_bad_input_and_options_are_refused_clearly(ffcv_interpreted, betons, tmp_path):
    recipe = mocov3_recipe(16, 0.2, MEAN, STD)
    path = betons["jpg"][0]
    with pytest.raises(DataError, match="quasi-random order with several processes"):
        _loader(ffcv_interpreted, path, recipe, rank=0, world=2, order="quasi_random", os_cache=False)
    with pytest.raises(DataError, match="data.os_cache=false"):
        _loader(ffcv_interpreted, path, recipe, order="quasi_random")
    with pytest.raises(DataError, match="fewer than one global batch"):
        _loader(ffcv_interpreted, path, recipe, gb=4096)
    with pytest.raises(DataError, match="no such file"):
        _loader(ffcv_interpreted, tmp_path / "missing.beton", recipe)
    truncated = tmp_path / "t.beton"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=str(truncated)):
        _loader(ffcv_interpreted, truncated, recipe)


def test_quasi_random_order_covers_whole_batches_in_one_process(ffcv_interpreted, betons):
    ld = _loader(ffcv_interpreted, betons["raw"][0], mocov3_recipe(16, 0.2, MEAN, STD), order="quasi_random",
                 os_cache=False)
    ld.set_epoch(0)
    ids = [i for b in ld for i in b.index.tolist()]
    assert len(ids) == len(ld) * 8 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("extra", [
    ["sdmp.enabled=true"],
    ["method.name=dino", "model.backbone=vit_tiny_p4_dyn", "data.local_crops=2", "method.dino_out_dim=64",
     "method.dino_hidden_dim=64", "method.dino_bottleneck_dim=32"],
], ids=["mocov3_sdmp", "dino_sdmp"])
def test_two_step_cli_runs(ffcv_interpreted, betons, tmp_path, extra):
    from sdmp_fast.pretrain import main
    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")
    assert main(["--config", smoke, "--loader", "ffcv", "--out", str(tmp_path / "r"),
                 f"data.beton={betons['jpg'][0]}", *extra]) == 0
    assert (tmp_path / "r" / "backbone.pt").is_file()
    assert main(["--config", smoke, "--loader", "ffcv", "--out", str(tmp_path / "s")]) == 2  # no data.beton


@pytest.mark.gpu
def test_gpu_hand_off(ffcv_interpreted, betons):
    cuda = torch.device("cuda", torch.cuda.current_device())
    recipe = dino_recipe(32, 16, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    ld = ffcv_interpreted.FfcvLoader(str(betons["jpg"][0]), recipe, 8, 0, 1, cuda, seed=0, num_workers=2)
    ld.set_epoch(0)
    b = next(iter(ld))
    b.check()
    assert all(v.device.type == "cuda" for v in b.views) and b.index.device.type == "cuda"


# ffcv's loading thread dies on the damaged image (that is the point): its exception is expected
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_damaged_jpeg_stops_the_loader_with_a_clear_error(ffcv_interpreted, betons, tmp_path):
    """ffcv ignores libjpeg-turbo's status and its iterator hangs when its thread dies: neither happens here."""
    from loaders.beton import Beton
    path = tmp_path / "damaged.beton"
    raw = bytearray(betons["jpg"][0].read_bytes())
    ref = Beton(betons["jpg"][0])
    sample = rank_batches(len(ref), 8, 0, 1, seed=0, epoch=0)[1][3]  # in the second batch
    ptr = int(ref.metadata["image"][sample]["data_ptr"])
    ref.close()
    raw[ptr:ptr + 600] = bytes(600)  # the JPEG header and the start of the scan
    path.write_bytes(bytes(raw))
    ld = _loader(ffcv_interpreted, path, mocov3_recipe(16, 0.2, MEAN, STD))
    ld.set_epoch(0)
    with pytest.raises(DataError, match=rf"stopped at step 1 of epoch 0, samples \[.*\b{sample}\b.*\].*cannot decode"):
        list(ld)


def test_ffcv_leaves_torchs_cpu_threads_alone(ffcv_interpreted, betons):
    """ffcv sets torch's intra-op threads to its worker count at import, per Loader and per epoch; not here."""
    before, target = torch.get_num_threads(), 2  # not ffcv's worker count (1)
    ld = _loader(ffcv_interpreted, betons["raw"][0], mocov3_recipe(16, 0.2, MEAN, STD))  # num_workers=1
    torch.set_num_threads(target)
    try:
        ld.set_epoch(0)
        list(ld)
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)


def test_ffcv_changes_no_interned_numba_type(ffcv_interpreted, betons, monkeypatch):
    """ffcv's OS-cache reader used to set ``mutable = False`` on numba's interned ``uint8[::1]`` type: the functions
    compiled for writable uint8 arrays before then printed ``Exception ignored in: <finalize object ...> KeyError:
    (Array(uint8, 1, 'C', ...`` when garbage-collected (their overload table keyed by that type under its old hash)."""
    import gc
    import sys

    import numba
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    writable = numba.types.Array(numba.uint8, 1, "C")
    first = numba.njit(lambda a: a[0] + 1)
    first(np.zeros(2, np.uint8))  # compiled for writable uint8 arrays, before the loader
    _loader(ffcv_interpreted, betons["raw"][0], mocov3_recipe(16, 0.2, MEAN, STD))  # builds ffcv's reader
    assert writable.mutable and numba.types.Array(numba.uint8, 1, "C") is writable
    del first
    gc.collect()
    assert ignored == []


def test_the_numba_compilation_is_announced_once_per_process(ffcv_interpreted, monkeypatch, capsys):
    monkeypatch.setattr(ffcv_interpreted, "_compiled_here", False)
    ffcv_interpreted._say_compiling()
    ffcv_interpreted._say_compiling()
    assert capsys.readouterr().err.count("[ffcv] numba compiles the decoding pipelines at the first batch") == 1
