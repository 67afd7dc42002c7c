"""Synthetic test images shared by the augmentation tests and the kernel parity cases."""
from __future__ import annotations

import numpy as np
import torch


def texture(h: int, w: int, seed: int) -> torch.Tensor:
    """uint8 [3, h, w]: smooth structure plus pixel noise (both filter regimes)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g) * 255
    img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (img + 25 * torch.randn(3, h, w, generator=g)).clamp(0, 255).round().to(torch.uint8)


def canvas_of(images: list[torch.Tensor], seed: int = 99):
    """Top-left aligned canvas with random garbage as padding (it must never leak into a view)."""
    hs, ws = [x.shape[1] for x in images], [x.shape[2] for x in images]
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randint(0, 256, (len(images), 3, max(hs), max(ws)), generator=g, dtype=torch.uint8)
    for b, x in enumerate(images):
        canvas[b, :, :hs[b], :ws[b]] = x
    return canvas, torch.tensor(list(zip(hs, ws)), dtype=torch.int64)


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar(folder, kind: str = "cifar10", train: int = 20, test: int = 10, names=None, seed: int = 0):
    """A tiny CIFAR folder in the real python format (pickled dicts with bytes keys, uint8 [N, 3072] RGB planes).

    ``kind`` cifar10: ``data_batch_1..5`` (``train`` images spread over them), ``test_batch``, ``batches.meta``;
    cifar100: ``train``, ``test``, ``meta`` (fine and coarse labels). ``names`` default to CIFAR-10's ten
    classes, or five for cifar100 (a real meta file lists 100; fewer keep every class populated here).
    Labels cycle over the classes. Returns {split: (data [N, 3072], labels [N])} as written.
    """
    import pickle
    from pathlib import Path

    import numpy as np
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = tuple(names or (CIFAR10_NAMES if kind == "cifar10" else ("apple", "aquarium_fish", "baby", "bear", "beaver")))
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", train), ("test", test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(i % len(names)) for i in range(n)]
        out[split] = (data, np.array(labels))

    def dump(name, d):
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)

    if kind == "cifar10":
        data, labels = out["train"]
        for b, idx in enumerate(np.array_split(np.arange(train), 5), 1):
            dump(f"data_batch_{b}", {b"batch_label": f"training batch {b} of 5".encode(), b"labels": [int(labels[i]) for i in idx],
                                     b"data": data[idx], b"filenames": [f"img_{i}.png".encode() for i in idx]})
        dump("test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": out["test"][1].tolist(),
                            b"data": out["test"][0], b"filenames": [f"t_{i}.png".encode() for i in range(test)]})
        dump("batches.meta", {b"num_cases_per_batch": max(1, train // 5), b"label_names": [n.encode() for n in names],
                              b"num_vis": 3072})
    else:
        for split in ("train", "test"):
            data, labels = out[split]
            dump(split, {b"filenames": [f"{split}_{i}.png".encode() for i in range(len(data))],
                         b"batch_label": split.encode(), b"fine_labels": labels.tolist(),
                         b"coarse_labels": [0] * len(data), b"data": data})
        dump("meta", {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": [b"all"]})
    return out


def edges_image(h: int, w: int) -> torch.Tensor:
    """uint8 [3, h, w] with a known structure: red ramps along x, green along y, blue is a sine, and the middle
    (rows h/4..h/2, columns w/3..2w/3) is a 2 px black/white checkerboard, where a bicubic filter overshoots."""
    y = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    x = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    img = torch.stack([255 * x / (w - 1), 255 * y / (h - 1), 127 + 100 * torch.sin(x / 3 + y / 5)])
    board = ((x // 2 + y // 2) % 2) * 255
    patch = (y >= h // 4) & (y < h // 2) & (x >= w // 3) & (x < 2 * w // 3)
    img = torch.where(patch, board, img)
    return img.round().clamp(0, 255).to(torch.uint8)


def pil_resized_crop(img: torch.Tensor, box: tuple[int, int, int, int], size: int,
                     interpolation: str) -> torch.Tensor:
    """PIL's crop of ``box`` (top, left, h, w) resized to size x size (``interpolation`` "bilinear" or "bicubic"),
    as torchvision's RandomResizedCrop does on a PIL image (DINO, MoCo v3): uint8 [3, size, size]."""
    from PIL import Image
    top, left, h, w = box
    pil = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
    mode = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    out = pil.crop((left, top, left + w, top + h)).resize((size, size), mode)
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)
