"""Exported backbones: weights plus the timm model name and constructor kwargs that rebuild them.

``load_backbone(path)`` (or ``timm.create_model(d["model_name"], **d["model_kwargs"])`` followed by
``load_state_dict(d["state_dict"])``) gives back the exact architecture: MoCo v3's ViT-S has 12 heads,
and a 6-head ViT-S has identical parameter shapes, so loading into the wrong one fails silently.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from sdmp_fast.engine.checkpoint import save_atomic

FORMAT = "sdmp_fast.backbone/1"


def export_backbone(backbone: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    spec = getattr(backbone, "sdmp_spec", None)
    if spec is None:
        raise ValueError("this backbone was not built by sdmp_fast.models (no sdmp_spec): cannot record how to rebuild it")
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    return save_atomic({"format": FORMAT, "model_name": spec.timm_name, "model_kwargs": dict(spec.kwargs),
                        "state_dict": state, **(extra or {})}, path)


def load_export(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check an export file: the dict with ``model_name``, ``model_kwargs``, ``state_dict`` (and extras)."""
    path = Path(path)
    expected = "expected an sdmp_fast backbone export (RUN_DIR/backbone.pt, written at the end of pretraining)"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no exported backbone here (pretraining writes RUN_DIR/backbone.pt)")
    try:
        d = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - whatever the file is (text, another archive), the answer is the same
        raise ValueError(f"{path}: not a file torch can read ({type(e).__name__}); {expected}") from None
    if isinstance(d, dict) and "step" in d and "method" in d and "optimizer" in d:
        raise ValueError(f"{path}: a training checkpoint, not an export; pass the run directory (its backbone.pt) "
                         "or finish the run with python -m sdmp_fast.pretrain --out RUN_DIR --resume auto")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        found = f"format {d.get('format')!r}" if isinstance(d, dict) else f"a {type(d).__name__}"
        raise ValueError(f"{path}: not an sdmp_fast backbone export ({found}; pretraining writes RUN_DIR/backbone.pt)")
    return d


def backbone_from_export(d: dict, **kwargs_override) -> nn.Module:
    """Rebuild the timm model of an export dict (``kwargs_override`` replaces constructor kwargs) and load its weights.

    Without overrides the load is strict. With ``num_classes`` (a classifier head the export lacks) the
    head's parameters are the only keys allowed to be missing.
    """
    import sdmp_fast.models  # noqa: F401  (registers the CIFAR ResNets with timm)
    kwargs = {**d["model_kwargs"], **kwargs_override}
    model = timm.create_model(d["model_name"], pretrained=False, **kwargs)
    if not kwargs.get("num_classes"):
        model.load_state_dict(d["state_dict"], strict=True)
        return model
    missing, unexpected = model.load_state_dict(d["state_dict"], strict=False)
    prefix = model.pretrained_cfg.get("classifier", "head")  # timm names the classifier: "head" (ViT), "fc" (ResNet)
    head = {f"{prefix}.{n}" for n, _ in model.get_classifier().named_parameters()}
    if unexpected or set(missing) - head:
        raise ValueError(f"export does not match {d['model_name']}: missing {sorted(set(missing) - head)}, "
                         f"unexpected {sorted(unexpected)}")
    return model


def load_backbone(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported backbone with timm and load its weights (strict)."""
    return backbone_from_export(load_export(path, map_location))
