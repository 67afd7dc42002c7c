"""Position tables of the ViTs: MoCo v3's fixed 2-D sin-cos table, and DINO's resampling for other token grids.

MoCo v3 (``build_2d_sincos_position_embedding`` in its vits.py) gives token ``(row r, column c)`` the channels
``[sin(r w_k), cos(r w_k), sin(c w_k), cos(c w_k)]``, ``w_k = 1 / 10000^(k / (D/4))``, ``k < D/4``, tokens in
row-major order. (Before 2026-12 this project wrote the column half first; runs keep the table stored in their
checkpoints, where it is a frozen parameter.)

DINO's ``interpolate_pos_encoding`` (its vision_transformer.py) resamples the table for a ``h x w`` token grid with
``F.interpolate(table, scale_factor=((h + 0.1) / N_h, (w + 0.1) / N_w), mode="bicubic")``: no antialiasing, and the
source coordinates follow that scale factor (not ``N / h``); the 0.1 keeps the output size ``floor`` from falling
one short. timm's ``dynamic_img_size`` resamples to the size instead, antialiased when shrinking, which at DINO's
96 px local crops gives a visibly different, smoother table. :class:`ResampledViT` is timm's ViT with DINO's rule,
registered with timm as ``vit_dino_resample`` so that an export rebuilds with ``timm.create_model`` once
``sdmp_fast.models`` is imported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer


def sincos_pos_embed(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo v3's fixed 2-D sin-cos table ``[grid_h * grid_w, dim]`` (dim divisible by 4): sin/cos of the row, then of
    the column, tokens in row-major order."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim % 4 == 0, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                                indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    out_r = rows.reshape(-1, 1) * omega
    out_c = cols.reshape(-1, 1) * omega
    return torch.cat([out_r.sin(), out_r.cos(), out_c.sin(), out_c.cos()], dim=1).float()


def dino_resample(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                  prefix: int = 1) -> torch.Tensor:
    """``pos_embed [1, prefix + N_h * N_w, D]`` for a ``new_grid`` of tokens, as DINO resamples it (module docstring);
    the same tensor when the grid is the table's own."""
    (h, w), (gh, gw) = new_grid, old_grid
    if (h, w) == (gh, gw):
        return pos_embed
    head, grid = pos_embed[:, :prefix], pos_embed[:, prefix:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, gh, gw, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((h + 0.1) / gh, (w + 0.1) / gw), mode="bicubic", align_corners=False)
    if grid.shape[-2:] != (h, w):  # DINO asserts the same
        raise ValueError(f"position table resampled to {tuple(grid.shape[-2:])}, expected {(h, w)}")
    return torch.cat([head, grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)], dim=1)


class ResampledViT(VisionTransformer):
    """timm's ViT whose position table follows DINO's resampling for inputs of another size (``dynamic_img_size``).

    Everything else (parameters, state-dict keys, initialisation) is timm's. Only the layout the project builds is
    accepted: a class token, no register tokens, the table covering the class token.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.dynamic_img_size or self.cls_token is None or self.reg_token is not None or self.no_embed_class:
            raise ValueError("ResampledViT needs dynamic_img_size=True, a class token, no register tokens and a "
                             "position table that covers the class token")

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape  # dynamic_img_size: the patch embedding keeps the token grid
        pos = dino_resample(self.pos_embed, (h, w), tuple(self.patch_embed.grid_size), self.num_prefix_tokens)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)], dim=1)
        return self.pos_drop(x + pos)


@register_model
def vit_dino_resample(pretrained: bool = False, **kwargs) -> ResampledViT:
    """:class:`ResampledViT` from explicit architecture kwargs (patch_size, embed_dim, depth, num_heads...)."""
    if pretrained:
        raise ValueError("vit_dino_resample: no pretrained weights exist for this architecture")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # create_model's, not the model's
        kwargs.pop(key, None)
    model = ResampledViT(**kwargs)
    model.pretrained_cfg = model.default_cfg = {"architecture": "vit_dino_resample", "classifier": "head",
                                                "num_classes": model.num_classes}
    return model
