import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image_folder
from sdmp_fast import datasets as D
from sdmp_fast.datasets import DataError, find_data, scan_folder, verify_images


def test_fashion_mnist_materialised_once_with_label_order(fashion_mnist_root, session_cache):
    root = fashion_mnist_root
    assert (root / ".complete").is_file()
    train, _ = scan_folder(root / "train")
    val, _ = scan_folder(root / "val")
    assert len(train) == 60000 and len(val) == 10000
    assert list(train.classes) == sorted(D.FASHION_MNIST_CLASSES) == list(D.FASHION_MNIST_CLASSES)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(val.labels).tolist() == [1000] * 10
    # the original label ids are kept: file k of train holds raw image k with raw label k
    raw = D._fashion_mnist_raw(D.FASHION_MNIST_RAW)
    from PIL import Image
    k = 12345
    lab = int(raw["train"][1][k])
    img = np.asarray(Image.open(root / "train" / D.FASHION_MNIST_CLASSES[lab] / f"{k:05d}.jpg"))
    assert img.shape == (28, 28, 3)
    assert np.abs(img[..., 0].astype(int) - raw["train"][0][k].astype(int)).mean() < 6  # JPEG q95
    t0 = os.stat(root / ".complete").st_mtime_ns
    assert D.fashion_mnist_folder(str(session_cache)) == root  # idempotent: nothing rewritten
    assert os.stat(root / ".complete").st_mtime_ns == t0


def _fake_idx(raw: Path, n: int = 40):
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        imgs = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        labs = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in imgs.shape) + imgs.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write((0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labs.tobytes())


def test_materialisation_is_atomic(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    _fake_idx(raw)
    calls = []

    def boom(args):
        calls.append(1)
        if len(calls) == 2:  # the second chunk (val split) fails
            raise KeyboardInterrupt("interrupted")
        return real(args)

    real = D._write_jpegs
    monkeypatch.setattr(D, "_write_jpegs", boom)
    with pytest.raises(KeyboardInterrupt):
        D.fashion_mnist_folder(str(tmp_path / "cache"), raw_dir=raw, progress=False)
    cache = tmp_path / "cache"
    assert not (cache / D._FMNIST_FOLDER).exists()  # nothing that looks valid
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in cache.iterdir())  # temp removed
    monkeypatch.setattr(D, "_write_jpegs", real)
    root = D.fashion_mnist_folder(str(cache), raw_dir=raw, progress=False)
    assert len(scan_folder(root / "train")[0]) == 40


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        D.fashion_mnist_folder(str(tmp_path), raw_dir=tmp_path / "nothing")


def test_find_data_layouts(image_folder, tmp_path):
    r = find_data(str(image_folder))
    assert r.train == image_folder / "train" and r.val == image_folder / "val"
    r = find_data(str(image_folder / "train"))
    assert r.train == image_folder / "train" and r.val is None
    with pytest.raises(DataError, match="does not exist"):
        find_data(str(tmp_path / "nope"))
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        find_data(str(f))


def test_scan_errors_name_the_problem(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class sub-folders.*the folder is empty"):
        scan_folder(empty)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"no class sub-folders.*a\.jpg"):
        scan_folder(flat)
    root = write_image_folder(tmp_path / "r", classes=2, per_class=2)
    (root / "class_009").mkdir()
    with pytest.raises(DataError, match="class folder\\(s\\) without images: .*class_009"):
        scan_folder(root)
    (root / "class_009").rmdir()
    (root / "class_000" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not images: .*notes.txt.*data.skip_corrupt=true"):
        scan_folder(root)
    split, skipped = scan_folder(root, skip_corrupt=True)
    assert len(split) == 4 and skipped[0].endswith("notes.txt")


def test_verify_lists_corrupt_images_or_skips_them(tmp_path):
    root = write_image_folder(tmp_path / "r", classes=2, per_class=3)
    good = (root / "class_000" / "img_0000.jpg").read_bytes()
    (root / "class_000" / "img_0001.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "class_001" / "img_0002.jpg").write_bytes(b"not a jpeg at all")
    split, _ = scan_folder(root)
    with pytest.raises(DataError) as e:
        verify_images(split, str(tmp_path / "c"), progress=False)
    msg = str(e.value)
    assert "2 unreadable image(s)" in msg and "img_0001.jpg" in msg and "img_0002.jpg" in msg and "skip_corrupt" in msg
    kept, failed = verify_images(split, str(tmp_path / "c"), skip_corrupt=True, progress=False)
    assert len(kept) == 4 and len(failed) == 2
    # cached: the second call does not decode again, and still reports
    with pytest.raises(DataError):
        verify_images(split, str(tmp_path / "c"), progress=False)
    # small images are not an error
    from PIL import Image
    Image.new("RGB", (3, 2)).save(root / "class_000" / "tiny.png")
    split, _ = scan_folder(root, skip_corrupt=True)
    _, failed = verify_images(split, str(tmp_path / "c2"), skip_corrupt=True, progress=False)
    assert len(failed) == 2
