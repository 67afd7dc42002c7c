"""Decoding one image (errors name the file) and the evaluation view in batches: deterministic, complete, in order."""
import numpy as np
import pytest
import torch

from sdmp_fast.data.folders import DataError, scan_folder
from sdmp_fast.data.images import EvalSpec, apply_eval, decode_rgb, eval_batches, eval_spec

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


def known_image(h: int = 75, w: int = 90) -> np.ndarray:
    """A smooth gradient with a sharp checkerboard patch: uint8 HWC, where the filters' differences show."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], -1).astype(np.uint8)
    img[20:50, 30:60] = np.where(((y[20:50, 30:60] // 3 + x[20:50, 30:60] // 3) % 2)[..., None] == 0, 250, 5)
    return img


@pytest.mark.parametrize("size", [32, 70])  # whole-image resize (< 64 px), and resize 80 + centre crop 70
def test_bicubic_eval_view_is_pils_bicubic(size):
    """DINO's evaluation resize is PIL's bicubic (Resize(256, interpolation=3)); uint8 levels within 1, and bilinear
    (MoCo v3's) is another image."""
    from PIL import Image
    img = known_image()
    spec = eval_spec(size, "bicubic")
    pil = Image.fromarray(img)
    if spec.resize == spec.size:
        pil = pil.resize((size, size), Image.BICUBIC)
    else:  # short side to spec.resize, then the centre crop, as torchvision's Resize + CenterCrop
        new = (round(spec.resize * img.shape[1] / img.shape[0]), spec.resize)
        pil = pil.resize(new, Image.BICUBIC)
        left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
        pil = pil.crop((left, top, left + size, top + size))
    want = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float()
    zero, one = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    got = apply_eval(torch.from_numpy(img).permute(2, 0, 1).contiguous(), spec, zero, one) * 255
    assert (got - want).abs().max() <= 1.0 + 1e-4
    bilinear = apply_eval(torch.from_numpy(img).permute(2, 0, 1).contiguous(), eval_spec(size), zero, one) * 255
    assert (bilinear - want).abs().max() > 8
    with pytest.raises(ValueError, match="choose one of bilinear, bicubic"):
        eval_spec(size, "nearest")
