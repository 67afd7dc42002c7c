"""Vision Transformers from timm, in MoCo v3's form and in DINO's form.

MoCo v3 (An Empirical Study of Training Self-Supervised Vision Transformers, Chen et al. 2021,
facebookresearch/moco-v3 vits.py) changes timm's ViT in three ways, reproduced here from its
description: a fixed 2-D sin-cos position embedding (class-token slot zero), a random patch projection
that is frozen ("stop-grad conv1"), and ViT-S/16 with 12 heads instead of DeiT's 6. Its
initialisation (xavier-uniform linears, qkv treated as three separate matrices, uniform patch
projection, tiny class token) is applied too. The timm model is reused, not copied; only parameters
and init are changed, so the exported state dict loads into ``timm.create_model(name, **kwargs)``.

DINO (Emerging Properties in Self-Supervised Vision Transformers, Caron et al. 2021) keeps the DeiT
ViT: a learned position embedding, a trained patch projection, 6 heads for ViT-S/16, drop-path, and
truncated-normal (std 0.02) init of the linears, the position embedding and the class token. Its local
crops (96 px for 224 px globals) need the position embedding resampled to the smaller grid: the ``*_dino``
backbones (and ``vit_tiny_p4_dyn``) take any multiple of the patch size (``dynamic_img_size=True``) and resample
as ``model.pos_resample`` says: ``dino`` builds ``models.pos_embed.ResampledViT`` (timm name
``vit_dino_resample``, DINO's bicubic call without antialiasing), ``timm`` the plain timm model (its antialiased
resampling, what runs recorded before the key existed used). The export records the timm name and every
constructor kwarg, so it rebuilds the same model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sdmp_fast.registry import BACKBONES

from sdmp_fast.models.common import BackboneSpec, create_timm
from sdmp_fast.models.pos_embed import sincos_pos_embed


def apply_mocov3_form(model: nn.Module) -> nn.Module:
    """Fixed sin-cos position embedding, frozen random patch projection, MoCo v3 initialisation."""
    gh, gw = model.patch_embed.grid_size
    dim = model.embed_dim
    with torch.no_grad():
        pe = sincos_pos_embed(gh, gw, dim)
        prefix = model.pos_embed.shape[1] - gh * gw  # 1 for the class token slot
        model.pos_embed.copy_(torch.cat([torch.zeros(prefix, dim), pe])[None])
    model.pos_embed.requires_grad_(False)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            if "qkv" in name:
                # qkv holds three dim x dim matrices: bound from one of them, not the stacked shape
                bound = math.sqrt(6.0 / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
                nn.init.uniform_(m.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if getattr(model, "cls_token", None) is not None:
        nn.init.normal_(model.cls_token, std=1e-6)
    proj = model.patch_embed.proj
    bound = math.sqrt(6.0 / float(3 * proj.kernel_size[0] * proj.kernel_size[1] + proj.out_channels))
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)
    proj.weight.requires_grad_(False)
    proj.bias.requires_grad_(False)
    return model


def _vit(timm_name: str, img_size: int, drop_path: float, **kw) -> nn.Module:
    spec = BackboneSpec(timm_name, dict(img_size=img_size, num_classes=0, drop_path_rate=drop_path, **kw))
    return apply_mocov3_form(create_timm(spec))


@BACKBONES.register("vit_tiny_p4", meta={"patch": 4}, help="tiny ViT for 32 px images (patch 4, dim 128, depth 4, 4 heads), MoCo v3 form; tests and the CPU default run")
def vit_tiny_p4(img_size: int = 32, drop_path: float = 0.0) -> nn.Module:
    return _vit("vit_tiny_patch16_224", img_size, drop_path, patch_size=4, embed_dim=128, depth=4, num_heads=4)


@BACKBONES.register("vit_small", meta={"patch": 16}, help="ViT-S/16, MoCo v3 form (12 heads, sin-cos pos-embed, frozen patch projection)")
def vit_small(img_size: int = 224, drop_path: float = 0.0) -> nn.Module:
    return _vit("vit_small_patch16_224", img_size, drop_path, num_heads=12)


@BACKBONES.register("vit_base", meta={"patch": 16}, help="ViT-B/16, MoCo v3 form (sin-cos pos-embed, frozen patch projection)")
def vit_base(img_size: int = 224, drop_path: float = 0.0) -> nn.Module:
    return _vit("vit_base_patch16_224", img_size, drop_path)


def apply_dino_form(model: nn.Module) -> nn.Module:
    """DINO's class-token init (truncated normal, std 0.02); timm already initialises the rest as DINO does."""
    if getattr(model, "cls_token", None) is not None:
        nn.init.trunc_normal_(model.cls_token, std=0.02)
    return model


# The variable-size ViTs, name: (timm name, full architecture kwargs for vit_dino_resample, which has no defaults of
# its own, the timm name's kwargs). The timm name with its kwargs is the model built before model.pos_resample existed.
_TINY_P4 = dict(patch_size=4, embed_dim=128, depth=4, num_heads=4)
_DYNAMIC = {"vit_tiny_p4_dino": ("vit_tiny_patch16_224", _TINY_P4, _TINY_P4),
            "vit_tiny_p4_dyn": ("vit_tiny_patch16_224", _TINY_P4, _TINY_P4),
            "vit_small_dino": ("vit_small_patch16_224", dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
                               dict(num_heads=6)),
            "vit_base_dino": ("vit_base_patch16_224", dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), {})}


def _dynamic_vit(name: str, img_size: int, drop_path: float, pos_resample: str) -> nn.Module:
    """Backbone ``name`` for any multiple of its patch size, its position table resampled per ``pos_resample``."""
    timm_name, arch, timm_kw = _DYNAMIC[name]
    common = dict(img_size=img_size, num_classes=0, drop_path_rate=drop_path, dynamic_img_size=True)
    if pos_resample == "dino":
        return create_timm(BackboneSpec("vit_dino_resample", {**common, **arch}))
    if pos_resample == "timm":  # the spec runs recorded before model.pos_resample have (their exports rebuild it)
        return create_timm(BackboneSpec(timm_name, {**common, **timm_kw}))
    raise ValueError(f"pos_resample = {pos_resample!r}: choose dino or timm")


TINY_DYNAMIC = {"patch": 4, "dynamic": True}  # registry meta: build_backbone passes model.pos_resample


@BACKBONES.register("vit_tiny_p4_dino", meta=TINY_DYNAMIC, help="tiny ViT for 32 px images (patch 4, dim 128, depth 4, 4 heads), DINO form "
                                                  "(learned pos-embed, resampled for 16 px local crops)")
def vit_tiny_p4_dino(img_size: int = 32, drop_path: float = 0.0, pos_resample: str = "dino") -> nn.Module:
    return apply_dino_form(_dynamic_vit("vit_tiny_p4_dino", img_size, drop_path, pos_resample))


@BACKBONES.register("vit_tiny_p4_dyn", meta=TINY_DYNAMIC, help="tiny ViT for 32 px images in MoCo v3 form (fixed sin-cos pos-embed, frozen "
                                                 "patch projection) that also takes 16 px local crops (pos-embed "
                                                 "resampled): the CPU DINO recipe's backbone")
def vit_tiny_p4_dyn(img_size: int = 32, drop_path: float = 0.0, pos_resample: str = "dino") -> nn.Module:
    """MoCo v3's stabilisers on a variable-size tiny ViT, for the short CPU DINO runs.

    Decision (docs/method.md): with DINO's own form (learned position embedding and patch projection,
    truncated-normal init) the tiny ViT did not learn within the CPU budget (k-NN at or below random
    init in every recipe tried); with the fixed sin-cos table and frozen random patch projection it does.
    The sin-cos table is stored in the (frozen) position embedding, resampled for 16 px crops.
    """
    return apply_mocov3_form(_dynamic_vit("vit_tiny_p4_dyn", img_size, drop_path, pos_resample))


@BACKBONES.register("vit_small_dino", meta={"patch": 16, "dynamic": True}, help="ViT-S/16, DINO form (6 heads, learned pos-embed resampled for local "
                                                                 "crops, drop-path)")
def vit_small_dino(img_size: int = 224, drop_path: float = 0.0, pos_resample: str = "dino") -> nn.Module:
    return apply_dino_form(_dynamic_vit("vit_small_dino", img_size, drop_path, pos_resample))


@BACKBONES.register("vit_base_dino", meta={"patch": 16, "dynamic": True}, help="ViT-B/16, DINO form (learned pos-embed resampled for local crops, "
                                                                "drop-path)")
def vit_base_dino(img_size: int = 224, drop_path: float = 0.0, pos_resample: str = "dino") -> nn.Module:
    return apply_dino_form(_dynamic_vit("vit_base_dino", img_size, drop_path, pos_resample))
