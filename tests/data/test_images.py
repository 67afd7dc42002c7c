"""Decoding one image (errors name the file) and the evaluation view in batches: deterministic, complete, in order."""
import numpy as np
import pytest
import torch

from sdmp_fast.data.folders import DataError, scan_folder
from sdmp_fast.data.images import EvalSpec, decode_rgb, eval_batches, eval_spec

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_decode_gives_uint8_rgb_and_names_an_unreadable_file(tmp_path):
    from PIL import Image
    gray = tmp_path / "gray.png"
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(gray)
    img = decode_rgb(str(gray))
    assert img.dtype == torch.uint8 and img.shape == (3, 3, 4) and torch.equal(img[0], img[2])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.jpg: cannot decode image .*data\.skip_corrupt=true"):
        decode_rgb(str(bad))


def test_eval_spec_crops_large_images_and_resizes_small_ones_whole():
    assert eval_spec(224) == EvalSpec(size=224, resize=256)
    assert eval_spec(32) == EvalSpec(size=32, resize=32)


def test_eval_batches_are_deterministic_complete_and_in_order(image_folder):
    split = scan_folder(image_folder / "train")[0]
    idx = list(range(0, len(split), 2))

    def batches():
        return list(eval_batches(split, idx, eval_spec(32), MEAN, STD, batch_size=5, num_workers=0))

    a, b = batches(), batches()
    assert [x.shape[0] for x, _ in a] == [5, 5, 5, 3] and a[0][0].shape[1:] == (3, 32, 32)
    assert torch.equal(torch.cat([y for _, y in a]), torch.tensor([split.samples[i][1] for i in idx]))
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))
