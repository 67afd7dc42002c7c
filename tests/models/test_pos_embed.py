"""Position tables against numbers derived outside the code: MoCo v3's formula written out, DINO's resampling call."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from sdmp_fast.config import load_config
from sdmp_fast.export import backbone_from_export
from sdmp_fast.models import build_backbone
from sdmp_fast.models.pos_embed import dino_resample, sincos_pos_embed


def mocov3_token(row: int, col: int, dim: int) -> list[float]:
    """MoCo v3's table entry of token (row, col), from its formula: [sin(r w), cos(r w), sin(c w), cos(c w)],
    w_k = 10000^(-k / (dim / 4))."""
    q = dim // 4
    w = [10000.0 ** (-k / q) for k in range(q)]
    return ([math.sin(row * x) for x in w] + [math.cos(row * x) for x in w]
            + [math.sin(col * x) for x in w] + [math.cos(col * x) for x in w])


def test_sincos_table_is_mocov3s_row_then_column():
    table = sincos_pos_embed(14, 14, 384)
    assert table.shape == (196, 384)
    # first and last tokens, and the two that tell row from column: (0, 13) and (1, 0), in row-major token order
    for token, (r, c) in {0: (0, 0), 195: (13, 13), 13: (0, 13), 14: (1, 0)}.items():
        want = torch.tensor(mocov3_token(r, c, 384))
        assert torch.allclose(table[token], want, atol=1e-6), token
    assert table[13, :96].abs().max() == 0 and table[13, 96:192].eq(1).all()  # row 0: sin 0, cos 1 first
    assert torch.allclose(sincos_pos_embed(2, 3, 8)[5], torch.tensor(mocov3_token(1, 2, 8)), atol=1e-6)


def test_mocov3_form_vit_holds_the_table_behind_a_zero_class_slot():
    m = build_backbone(load_config(overrides=["model.backbone=vit_small", "data.image_size=224"]))
    assert m.pos_embed[0, 0].abs().max() == 0 and not m.pos_embed.requires_grad
    assert torch.allclose(m.pos_embed[0, 1 + 13], torch.tensor(mocov3_token(0, 13, 384)), atol=1e-6)


def dino_interpolate(pos_embed: torch.Tensor, w: int, h: int, patch: int) -> torch.Tensor:
    """DINO's interpolate_pos_encoding for an input of w x h pixels, as its vision_transformer.py calls it."""
    n = pos_embed.shape[1] - 1
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch + 0.1, h // patch + 0.1
    grid = F.interpolate(pos_embed[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
                         scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def used_table(model, size: int) -> torch.Tensor:
    """The position table the model adds for a size x size input (zero tokens and a zero class token)."""
    grid = size // model.patch_embed.patch_size[0]
    with torch.no_grad():
        model.cls_token.zero_()
        return model._pos_embed(torch.zeros(1, grid, grid, model.embed_dim))


@pytest.mark.parametrize("backbone, global_size, local_size",
                         [("vit_small_dino", 224, 96), ("vit_tiny_p4_dyn", 32, 16)])
def test_dino_resampling_is_dinos_call(backbone, global_size, local_size):
    torch.manual_seed(0)
    cfg = load_config(overrides=["method.name=dino", f"model.backbone={backbone}", f"data.image_size={global_size}",
                                 f"data.local_size={local_size}"])
    model = build_backbone(cfg)
    assert type(model).__name__ == "ResampledViT" and cfg.model.pos_resample == "dino"
    want = dino_interpolate(model.pos_embed.detach(), local_size, local_size, model.patch_embed.patch_size[0])
    got = used_table(model, local_size)
    assert got.shape == want.shape and torch.equal(got, want)
    assert torch.equal(used_table(model, global_size), model.pos_embed.detach())  # its own grid: unchanged
    # timm's antialiased resampling (pos_resample=timm, runs recorded before the key) is another table
    torch.manual_seed(0)
    old = build_backbone(load_config(overrides=[*[f"{k}={v}" for k, v in (("method.name", "dino"), ("model.backbone",
                                     backbone), ("data.image_size", global_size), ("data.local_size", local_size))],
                                     "model.pos_resample=timm"]))
    assert type(old).__name__ == "VisionTransformer"
    old.load_state_dict(model.state_dict())
    rel = (used_table(old, local_size) - want).norm() / want.norm()
    assert rel > 0.01, rel


def test_dino_resample_checks_its_output_and_keeps_prefix_tokens():
    table = torch.randn(1, 1 + 6 * 6, 8)
    out = dino_resample(table, (3, 4), (6, 6))
    assert out.shape == (1, 1 + 12, 8) and torch.equal(out[:, :1], table[:, :1])
    assert dino_resample(table, (6, 6), (6, 6)) is table


def test_resampled_vit_export_rebuilds_with_timm():
    cfg = load_config(overrides=["method.name=dino", "model.backbone=vit_tiny_p4_dino"])
    model = build_backbone(cfg).eval()
    spec = model.sdmp_spec
    assert spec.timm_name == "vit_dino_resample" and spec.kwargs["dynamic_img_size"]
    again = timm.create_model(spec.timm_name, **spec.kwargs).eval()
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(again(x), model(x), atol=1e-5)  # the built one runs channels-last
    head = backbone_from_export({"model_name": spec.timm_name, "model_kwargs": dict(spec.kwargs),
                                 "state_dict": model.state_dict()}, num_classes=5)
    assert head(x).shape == (2, 5)
