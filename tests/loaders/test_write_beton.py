"""python -m loaders.write_beton: the split a user means, no silent overwrite, labelled progress, clear errors."""
import pytest
from conftest import require

pytestmark = pytest.mark.ffcv


def _labels(path):
    from loaders.beton import Beton
    b = Beton(path)
    try:
        return b.ints("label")
    finally:
        b.close()


def test_a_data_set_root_converts_one_split_and_an_existing_output_needs_overwrite(image_folder, tmp_path, capsys):
    require("ffcv", "ffcv")
    from loaders.write_beton import main
    out, small = tmp_path / "d.beton", ["--max-resolution", "32", "--workers", "1"]
    # a root holding train/ and val/: train by default (not a 2-class file of the split folders); options anywhere
    assert main(["--workers", "1", str(image_folder), "--max-resolution", "32", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"36 images of 3 classes from {image_folder / 'train'}" in err
    assert "writing d.beton: 100%" in err  # ffcv's own progress bar, named
    assert len(_labels(out)) == 36 and _labels(out).max() == 2
    stamp = out.stat().st_mtime_ns
    assert main([str(image_folder), str(out), "--split", "val", *small]) == 2
    assert f"error: {out} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == stamp and len(_labels(out)) == 36  # untouched
    assert main([str(image_folder), str(out), "--split", "val", "--overwrite", *small]) == 0
    assert len(_labels(out)) == 12 and f"from {image_folder / 'val'}" in capsys.readouterr().err
    # one split is converted as it is; --split has nothing to choose there
    assert main([str(image_folder / "val"), str(tmp_path / "x.beton"), "--split", "train", *small]) == 2
    assert "holds no train/ or val/ folder; it is one split" in capsys.readouterr().err
    assert not (tmp_path / "x.beton").exists()
