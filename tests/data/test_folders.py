"""Image folders: scanning names what is wrong; every image is decoded once, the unreadable ones listed or skipped."""
import pytest

from conftest import write_image_folder
from sdmp_fast.data.folders import DataError, scan_folder, verify_images


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
