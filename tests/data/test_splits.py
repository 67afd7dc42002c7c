"""Which images a run uses: class subsets, label fractions and label subset files."""
from pathlib import Path

import numpy as np
import pytest

from sdmp_fast.data import splits as S
from sdmp_fast.data.folders import DataError, scan_folder
from sdmp_fast.data.sources import find_data


def test_class_subset_keeps_and_renumbers_classes(image_folder, tmp_path):
    from sdmp_fast.config import DataConfig
    f = tmp_path / "subset.txt"
    f.write_text("# two of the three classes\nclass_002\n\nclass_000\n")
    data = DataConfig(path=str(image_folder), class_subset=str(f))
    train, val, name = S.load_splits(data, progress=False)
    assert train.classes == val.classes == ("class_000", "class_002") and name.endswith("(2 classes of subset.txt)")
    full = scan_folder(image_folder / "train")[0]
    assert [p for p, _ in train.samples] == [p for p, lab in full.samples if lab in (0, 2)]
    assert [lab for p, lab in train.samples] == [0 if "class_000" in p else 1 for p, _ in train.samples]
    assert len(val) == 8 and S.restrict_classes(train, f) == train  # restricting again changes nothing
    for text, message in (
            ("class_000\nclass_007\n", r"subset\.txt: 1 class\(es\) that are not class folders of .*'class_007' \(line 2\)"),
            ("class_000\n\nclass_000\n", r"subset\.txt, line 3: class 'class_000' is listed twice \(first at line 1\)"),
            ("\n# nothing\n", r"subset\.txt: the class subset is empty"),
            ("train/class_000\n", r"line 1: 'train/class_000' is not a class folder name")):
        f.write_text(text)
        with pytest.raises(DataError, match=message):
            S.load_splits(data, progress=False)
    with pytest.raises(DataError, match="no such file"):
        S.restrict_classes(full, tmp_path / "missing.txt")


def test_label_fraction_is_per_class_seeded_and_in_folder_order(image_folder):
    full = scan_folder(image_folder / "train")[0]  # 3 classes x 12 images
    a = S.label_fraction(full, 0.25, seed=0)
    assert np.bincount(a.labels).tolist() == [3, 3, 3] and a.classes == full.classes
    assert S.label_fraction(full, 0.25, seed=0) == a and S.label_fraction(full, 0.25, seed=1) != a
    order = {s: i for i, s in enumerate(full.samples)}
    assert [order[s] for s in a.samples] == sorted(order[s] for s in a.samples)
    assert np.bincount(S.label_fraction(full, 0.01, seed=0).labels).tolist() == [1, 1, 1]  # at least one per class
    assert S.label_fraction(full, 1.0) is full
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(DataError, match=r"must be in \(0, 1\]"):
            S.label_fraction(full, bad)


def test_label_subset_file(image_folder, cifar_dirs, tmp_path):
    full = scan_folder(image_folder / "train")[0]
    f = tmp_path / "labels.txt"
    f.write_text("class_000/img_0003.jpg\n# a comment\n./class_002/img_0000.jpg\n")
    kept = S.label_subset(full, f)
    assert [(Path(p).parent.name, Path(p).name, lab) for p, lab in kept.samples] == [
        ("class_000", "img_0003.jpg", 0), ("class_002", "img_0000.jpg", 2)]
    rec = S.label_record(kept, full, {"subset_file": str(f)})
    assert rec["images"] == 2 and rec["of"] == 36 and rec["classes_without_labels"] == 1
    # file names alone (SimCLR's lists) where they are unique: the CIFAR folder's
    cifar = scan_folder(find_data(str(cifar_dirs["cifar10"][0])).train)[0]
    f.write_text("00003.png\n00011.png\n")
    assert sorted(Path(p).name for p, _ in S.label_subset(cifar, f).samples) == ["00003.png", "00011.png"]
    for text, message in (("img_0003.jpg\n", r"line 1: 'img_0003\.jpg' names 3 images .*class/file"),
                          ("class_000/nope.jpg\n", r"line 1: 'class_000/nope\.jpg' is not an image of"),
                          ("nope.jpg\n", r"line 1: no image named 'nope\.jpg'"),
                          ("class_000/img_0001.jpg\nclass_000/img_0001.jpg\n", r"line 2: .* is listed twice"),
                          ("# only a comment\n", "the label subset is empty")):
        f.write_text(text)
        with pytest.raises(DataError, match=message):
            S.label_subset(full, f)
    with pytest.raises(DataError, match="no such file"):
        S.label_subset(full, tmp_path / "missing.txt")


def test_every_bad_file_of_both_splits_is_reported_at_once(image_folder, tmp_path):
    """An empty class folder and a stray file in train/, a damaged JPEG in val/: one error lists all three (fixing
    one kind and running again to meet the next is what this avoids); with skip_corrupt the files are counted."""
    import dataclasses
    import shutil

    from sdmp_fast.config import DataConfig
    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    (root / "train" / "class_zzz").mkdir()
    (root / "train" / "class_000" / "notes.txt").write_text("not an image")
    victim = sorted((root / "val").rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    data = DataConfig(path=str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        S.load_splits(data, progress=False)
    text = str(e.value)
    assert text.startswith("3 problems with the data (all listed; fix them and run again):")
    assert f"{root / 'train'}: class folder(s) without images: {root / 'train' / 'class_zzz'}" in text
    assert f"{root / 'train'}: 1 file(s) that are not images: {root / 'train' / 'class_000' / 'notes.txt'}" in text
    assert f"1 unreadable image(s) under {root / 'val'}:\n  {victim}" in text
    (root / "train" / "class_zzz").rmdir()
    train, val, _ = S.load_splits(dataclasses.replace(data, skip_corrupt=True), progress=False)
    assert (len(train.skipped), len(val.skipped)) == (1, 1) and (len(train), len(val)) == (36, 11)
