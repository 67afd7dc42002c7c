"""The embedded data sets (Fashion-MNIST, CIFAR) materialised as image folders, and ``find_data``'s layouts."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from sdmp_fast.data import sources as D
from sdmp_fast.data.folders import DataError, scan_folder
from sdmp_fast.data.sources import find_data


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


def test_cifar_folders_materialise_losslessly_in_label_order(cifar_dirs, tmp_path):
    from PIL import Image
    for name, (folder, written) in cifar_dirs.items():
        root = find_data(str(folder), str(tmp_path / "c"))
        assert root.name == name and root.train.parent.name.startswith(f"{name}_png_v1_")
        train, val = scan_folder(root.train)[0], scan_folder(root.val)[0]
        assert (len(train), len(val)) == (20, 10)
        assert train.classes[3] == ("03_cat" if name == "cifar10" else "03_bear") and train.classes == val.classes
        for split, part in ((train, "train"), (val, "test")):
            data, labels = written[part]
            for path, label in split.samples:
                k = int(Path(path).stem)  # file k holds image k of the batches, in order
                assert label == labels[k]
                img = np.asarray(Image.open(path))
                assert img.shape == (32, 32, 3) and np.array_equal(img.transpose(2, 0, 1).reshape(-1), data[k])
    with pytest.raises(DataError, match="holds both cifar-10-batches-py and cifar-100-python"):
        find_data(str(cifar_dirs["cifar10"][0].parent), str(tmp_path / "c"))


def test_cifar_materialisation_is_atomic_and_keyed_by_content(tmp_path, monkeypatch):
    import shutil

    from images import write_cifar
    folder = tmp_path / "a" / "cifar-10-batches-py"
    write_cifar(folder)
    cache = tmp_path / "cache"
    real = D._write_pngs

    def boom(args):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(D, "_write_pngs", boom)
    with pytest.raises(KeyboardInterrupt):
        D.cifar_folder(folder, str(cache), progress=False)
    assert not any(cache.iterdir())  # neither a folder that looks valid nor the temporary one
    monkeypatch.setattr(D, "_write_pngs", real)
    root, layout = D.cifar_folder(folder, str(cache), progress=False)
    assert layout.name == "cifar10" and (root / ".complete").is_file()
    t0 = os.stat(root / ".complete").st_mtime_ns
    assert D.cifar_folder(folder, str(cache), progress=False)[0] == root  # reused, nothing rewritten
    assert os.stat(root / ".complete").st_mtime_ns == t0
    copy = shutil.copytree(folder, tmp_path / "b" / "cifar-10-batches-py")
    assert D.cifar_folder(copy, str(cache), progress=False)[0] == root  # same content, same folder
    write_cifar(tmp_path / "c" / "cifar-10-batches-py", seed=1)
    assert D.cifar_folder(tmp_path / "c" / "cifar-10-batches-py", str(cache), progress=False)[0] != root


def test_bad_cifar_files_are_clear_errors(tmp_path):
    import pickle

    from images import write_cifar
    folder, cache = tmp_path / "cifar-10-batches-py", str(tmp_path / "cache")

    def fails(match):
        with pytest.raises(DataError, match=match):
            find_data(str(folder), cache)
        write_cifar(folder)  # repaired for the next case

    write_cifar(folder)
    (folder / "data_batch_3").unlink()
    fails(r"lacks .*data_batch_3; a CIFAR folder is the extracted python version: cifar-10-batches-py/")
    (folder / "data_batch_2").write_bytes((folder / "data_batch_2").read_bytes()[:200])
    fails(r"data_batch_2: not a CIFAR python pickle .*extract the archive again")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2))
    fails(r"data_batch_1: not a CIFAR python pickle \(UnpicklingError: refusing to load posix\.system")
    assert not (tmp_path / "ran").exists()  # the restricted unpickler ran nothing
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    fails(r"test_batch: b'data' must be a uint8 array \[N, 3072\]")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    fails(r"test_batch: labels must be in 0\.\.9")
    (folder / "batches.meta").write_bytes(pickle.dumps({b"nothing": 1}))
    fails(r"batches\.meta: no list of class names under b'label_names'")
