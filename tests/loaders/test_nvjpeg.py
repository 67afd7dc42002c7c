"""The nvjpeg loader on CPU (decode_jpeg on the CPU device: the same code path as nvJPEG) and, marked gpu, on CUDA."""
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_bicubic_views, with_filter

from loaders.nvjpeg import NvjpegLoader, cpu_path_files, decode_batch, jpeg_components, pack
from sdmp_fast.augment import apply_views, sample_view_params
from sdmp_fast.augment.recipes import dino_recipe, mocov3_recipe
from sdmp_fast.data.folders import DataError, Split, scan_folder
from sdmp_fast.data.sharding import rank_batches
from sdmp_fast.streams import step_generator

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """RGB, grayscale and CMYK JPEGs and a PNG named .jpg, of different sizes."""
    from PIL import Image
    root = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(4):
            arr = rng.integers(0, 255, (20 + 7 * i, 30 - 3 * i, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"rgb{i}.jpg", quality=90)
        Image.fromarray(arr[..., 0]).save(root / c / "gray.jpg", quality=90)
        Image.fromarray(arr).convert("CMYK").save(root / c / "cmyk.jpg", quality=90)
        Image.fromarray(arr).save(root / c / "png.jpg", format="PNG")
    return scan_folder(root)[0]


def test_header_index_sends_cmyk_and_non_jpeg_to_the_cpu_path(odd_folder, tmp_path):
    heads = {Path(p).name: jpeg_components(Path(p).read_bytes()) for p, _ in odd_folder.samples}
    assert heads["rgb0.jpg"] == 3 and heads["gray.jpg"] == 1 and heads["cmyk.jpg"] == 4 and heads["png.jpg"] == 0
    ids = cpu_path_files(odd_folder, tmp_path)
    assert {Path(odd_folder.samples[i][0]).name for i in ids} == {"cmyk.jpg", "png.jpg"} and len(ids) == 4
    assert cpu_path_files(odd_folder, tmp_path) == ids and list(tmp_path.glob("nvjpeg_index_*.json"))


@pytest.mark.parametrize("kind", ["mocov3", "dino"])
def test_batches_follow_the_contract_with_mixed_sizes_and_formats(odd_folder, tmp_path, kind):
    recipe = (mocov3_recipe(16, 0.2, MEAN, STD) if kind == "mocov3"
              else dino_recipe(16, 8, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD))
    ld = NvjpegLoader(odd_folder, recipe, 4, 1, 2, CPU, seed=0, cache_dir=tmp_path)
    ld.set_epoch(2)
    batches = list(ld)
    assert len(batches) == len(ld) == len(odd_folder) // 4
    for b, ids in zip(batches, rank_batches(len(odd_folder), 4, 1, 2, seed=0, epoch=2)):
        b.check()
        assert b.index.tolist() == ids and b.label.tolist() == [odd_folder.samples[i][1] for i in ids]
        assert [tuple(v.shape) for v in b.views] == [(2, 3, s, s) for s in recipe.sizes]
    again = NvjpegLoader(odd_folder, recipe, 4, 1, 2, CPU, seed=0, cache_dir=tmp_path)
    again.set_epoch(2, start_step=1)  # resume: the same batches from step 1
    assert all(torch.equal(x, y) for x, y in zip(next(iter(again)).views, batches[1].views))


def test_a_dino_recipe_is_resized_bicubically(odd_folder, tmp_path):
    """The loader hands its recipe to the batched augmentation: DINO's views are bicubic crops."""
    recipe = dino_recipe(16, 8, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    assert {v.interpolation for v in recipe.views} == {"bicubic"}
    ids = [0, 1, 2, 3]
    views = {}
    for r in (recipe, with_filter(recipe, "bilinear")):
        ld = NvjpegLoader(odd_folder, r, 4, 0, 1, CPU, seed=5, cache_dir=tmp_path)
        ld.set_epoch(1)
        views[r.views[0].interpolation] = ld.make_batch(2, ids).views
    canvas, sizes = pack(decode_batch(*ld._encoded(ids), CPU))
    params = sample_view_params(recipe, sizes, step_generator(5, 0, 1, 2, CPU))
    assert_bicubic_views(views["bicubic"], apply_views(canvas, sizes, params, recipe), views["bilinear"])


def test_a_corrupt_jpeg_is_named(tmp_path):
    (tmp_path / "c").mkdir()
    good = tmp_path / "c" / "good.jpg"
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad = tmp_path / "c" / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:40] + b"\x00" * 50)
    split = Split(root=tmp_path, classes=("c",), samples=((str(good), 0), (str(bad), 0)))
    ld = NvjpegLoader(split, mocov3_recipe(8, 0.2, MEAN, STD), 2, 0, 1, CPU, seed=0)
    with pytest.raises(DataError, match="bad.jpg"):
        next(iter(ld))


@pytest.mark.parametrize("extra", [["sdmp.enabled=true"],
                                   ["method.name=dino", "model.backbone=vit_tiny_p4_dyn", "data.local_crops=2",
                                    "method.dino_out_dim=64", "method.dino_hidden_dim=64",
                                    "method.dino_bottleneck_dim=32", "sdmp.enabled=true"]], ids=["mocov3_sdmp", "dino_sdmp"])
def test_two_step_cli_runs(image_folder, tmp_path, extra):
    from sdmp_fast.pretrain import run
    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")
    summary = run(["--config", smoke, "--loader", "nvjpeg", "--data", str(image_folder), "--out", str(tmp_path / "r"),
                   *extra], progress=False)
    assert summary["steps"] == 2


@pytest.mark.gpu
def test_cuda_decode_path(image_folder, tmp_path):
    split = scan_folder(image_folder / "train")[0]
    cuda = torch.device("cuda", torch.cuda.current_device())
    recipe = dino_recipe(32, 16, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
    ld = NvjpegLoader(split, recipe, 8, 0, 1, cuda, seed=0, cache_dir=tmp_path)
    ld.set_epoch(0)
    batches = list(ld)
    assert len(batches) == len(ld)
    for b in batches:
        b.check()
        assert all(v.device.type == "cuda" for v in b.views)
    cpu = NvjpegLoader(split, recipe, 8, 0, 1, CPU, seed=0, cache_dir=tmp_path)
    cpu.set_epoch(0)
    ref = next(iter(cpu))
    assert torch.equal(ref.index, batches[0].index.cpu())
    for g, c in zip(batches[0].views, ref.views):  # other generator (device RNG), same distribution
        assert abs(float(g.float().mean()) - float(c.mean())) < 0.5


def test_beton_reader_agrees_with_ffcv_and_the_folder(betons, image_folder):
    from ffcv.reader import Reader
    from PIL import Image

    from loaders.beton import Beton
    split = scan_folder(image_folder / "train")[0]
    for mode, (path, summary) in betons.items():
        assert summary["images"] == len(split) and summary["skipped"] == 0
        ours, ref = Beton(path), Reader(str(path))
        assert len(ours) == int(ref.num_samples) == len(split)
        for k, name in enumerate(["image", "label", "index", "height", "width"]):
            if name != "image":
                assert (ours.ints(name) == ref.metadata[f"f{k}"]).all()
        assert ours.ints("label").tolist() == [lab for _, lab in split.samples]
        assert ours.ints("index").tolist() == list(range(len(split)))
        i = 5
        with Image.open(split.samples[i][0]) as im:
            assert (ours.ints("height")[i], ours.ints("width")[i]) == (im.height, im.width)
        m, h, w, data = ours.image(i)
        assert (m == 0) == (mode == "jpg") and max(h, w) <= 48
        if mode == "raw":  # raw mode holds the resized pixels exactly
            assert len(data) == h * w * 3
        else:
            assert bytes(data[:2]) == b"\xff\xd8" and data.dtype == np.uint8
        ours.close()


def test_writer_is_atomic_and_reports_corrupt_images(tmp_path, image_folder):
    from conftest import require
    require("ffcv", "ffcv")
    import shutil

    from loaders.write_beton import main as write_main
    src = tmp_path / "src"
    shutil.copytree(image_folder / "train", src)
    bad = next((src / "class_0").iterdir()) if (src / "class_0").is_dir() else next(next(src.iterdir()).iterdir())
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    assert write_main([str(src), str(tmp_path / "x.beton"), "--workers", "1"]) == 2
    assert not list(tmp_path.glob("*.beton")) and not list(tmp_path.glob(".x.beton.partial*"))
    assert write_main([str(src), str(tmp_path / "x.beton"), "--workers", "1", "--skip-corrupt", "--limit", "20"]) == 0
    assert (tmp_path / "x.beton").is_file()


@pytest.mark.parametrize("mode", ["jpg", "raw"])
def test_nvjpeg_trains_from_a_beton(betons, tmp_path, mode):
    from sdmp_fast.pretrain import run
    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")
    summary = run(["--config", smoke, "--loader", "nvjpeg", "--out", str(tmp_path / "r"),
                   f"data.beton={betons[mode][0]}", "sdmp.enabled=true"], progress=False)
    assert summary["steps"] == 2
