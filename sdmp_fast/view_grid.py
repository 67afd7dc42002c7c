"""Pictures a person can check: a PNG grid of the views one SDMP step trains on (``--dump-views N``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def to_uint8(x: torch.Tensor, mean, std) -> np.ndarray:
    """Undo the normalisation of ``[3, H, W]`` and return an HxWx3 uint8 array."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    img = (x.detach().float().cpu() * s + m).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_view_grid(columns: dict[str, torch.Tensor], captions: dict[str, list[str]], mean, std, path: str | Path,
                   rows: int, title: str = "", scale: int = 0) -> Path:
    """One row per sample, one column per named view batch ``[B, 3, H, W]``; captions under the cells."""
    from PIL import Image, ImageDraw
    names = list(columns)
    h, w = columns[names[0]].shape[-2:]
    scale = scale or max(1, 128 // max(h, w))
    cw, ch, pad, text_h = w * scale, h * scale, 6, 14
    top = 2 * text_h
    rows = min(rows, columns[names[0]].shape[0])
    canvas = Image.new("RGB", (len(names) * (cw + pad) + pad, top + rows * (ch + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 2), title, fill="black")
    for j, name in enumerate(names):
        draw.text((pad + j * (cw + pad), text_h), name, fill="black")
    for i in range(rows):
        y = top + i * (ch + text_h + pad)
        for j, name in enumerate(names):
            x = pad + j * (cw + pad)
            cell = Image.fromarray(to_uint8(columns[name][i], mean, std)).resize((cw, ch), Image.NEAREST)
            canvas.paste(cell, (x, y))
            cap = captions.get(name, [""] * rows)[i]
            draw.text((x, y + ch + 1), cap, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def dump_sdmp_views(method, batch, rng, mean, std, path: str | Path, n: int) -> Path:
    """Grid of the views one SDMP step trains on, for the first ``n`` samples of ``batch``.

    The method names the columns and captions (``Method.view_grid``): MoCo v3 shows a, b, b_mix, a_mix;
    DINO the global views, the teacher's mixed global view, and the clean and mixed local views.
    Columns of smaller views (local crops) are scaled up to the cell size of the first column.
    """
    with torch.no_grad():
        columns, captions, title = method.view_grid(batch.views, batch.index, rng)
    return save_view_grid(columns, captions, mean, std, path, rows=n, title=title)
