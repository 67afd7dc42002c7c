"""A pretrained backbone as the evaluation commands read it: run directory or export, and its random-init twin.

``--pretrained`` names a run directory (``RUN_DIR/backbone.pt``, written at the end of pretraining) or an
export file. The export records the timm model name, its constructor kwargs and (for pretraining runs)
the resolved pretraining config, whose data settings are the evaluation defaults.

Every evaluation reports the same architecture at random initialisation beside the trained backbone,
as pretraining's k-NN report does. When the export records ``model.backbone`` and ``run.seed``, the
random-init weights are drawn by that registry builder (with the recorded ``model.pos_resample``) after
``torch.manual_seed(run.seed)``, and its frozen parameters (MoCo v3-form ViTs: the fixed sin-cos position table and
the frozen random patch projection) are taken from the export, which holds them as they were at step 0: the very
initialisation pretraining started from, also for runs whose table was built before its definition changed.
Otherwise: ``timm.create_model(model_name, **model_kwargs)`` after ``torch.manual_seed(seed)``. Both arms are timm
models of the same class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from sdmp_fast.config import Config
from sdmp_fast.export import backbone_from_export, load_export
from sdmp_fast.models.common import adopt_frozen, backbone_kwargs
from sdmp_fast.schema import ConfigError, recorded_value


@dataclass
class Pretrained:
    export_path: Path
    run_dir: Path  # default home of the evaluation outputs
    export: dict  # model_name, model_kwargs, state_dict, and the recorded extras (config, method, sdmp)
    trained: nn.Module
    random_init: nn.Module
    random_init_how: str

    @property
    def config(self) -> dict:
        return self.export.get("config") or {}

    @property
    def backbone_name(self) -> str:
        """The pretraining run's ``model.backbone`` (e.g. vit_tiny_p4), else the timm name with its patch size."""
        name = self.config.get("model", {}).get("backbone")
        if name:
            return name
        patch = self.export.get("model_kwargs", {}).get("patch_size")
        return self.export["model_name"] + (f" (patch_size={patch})" if patch else "")

    @property
    def description(self) -> str:
        method = self.export.get("method") or self.config.get("method", {}).get("name", "?")
        sdmp = self.export.get("sdmp")
        return f"{self.backbone_name} from {method}{' + SDMP' if sdmp else ''} ({self.export_path})"


def resolve_export_path(text: str | None) -> tuple[Path, Path]:
    """``--pretrained`` -> (export file, run directory); errors say what is expected."""
    if not text:
        raise ConfigError("--pretrained is required: a pretraining run directory (RUN_DIR/backbone.pt) "
                          "or an exported backbone file")
    p = Path(text).expanduser()
    if p.is_dir():
        f = p / "backbone.pt"
        if not f.is_file():
            raise ConfigError(f"--pretrained {text}: the run directory has no backbone.pt (pretraining writes it at "
                              "the end; a stopped run continues with python -m sdmp_fast.pretrain --out RUN_DIR --resume auto)")
        return f, p
    if p.is_file():
        return p, p.parent
    raise ConfigError(f"--pretrained {text}: no such run directory or export file")


def build_random_init(d: dict) -> tuple[nn.Module, str]:
    """The export's architecture at random initialisation, drawn as pretraining drew it (module docstring)."""
    import sdmp_fast.models  # noqa: F401  (registers the backbones)
    from sdmp_fast.registry import BACKBONES
    cfg = d.get("config") or {}
    seed = int(cfg.get("run", {}).get("seed", 0))
    name = cfg.get("model", {}).get("backbone")
    if name in BACKBONES:
        torch.manual_seed(seed)
        built = BACKBONES.build(name, **backbone_kwargs(
            name, int(cfg.get("data", {}).get("image_size", 224)), float(cfg.get("model", {}).get("drop_path", 0.0)),
            recorded_value(Config, cfg, "model.pos_resample")))
        spec = getattr(built, "sdmp_spec", None)
        if spec is not None and spec.timm_name == d["model_name"] and dict(spec.kwargs) == dict(d["model_kwargs"]):
            model = timm.create_model(d["model_name"], pretrained=False, **d["model_kwargs"])
            adopt_frozen(built, d["state_dict"])
            model.load_state_dict(built.state_dict(), strict=True)  # the timm class of the trained one
            return model, f"model.backbone={name} built at seed {seed} (pretraining's initialisation)"
    torch.manual_seed(seed)
    model = timm.create_model(d["model_name"], pretrained=False, **d["model_kwargs"])
    return model, f"timm.create_model({d['model_name']!r}, **model_kwargs) at seed {seed}"


def load_pretrained(text: str | None) -> Pretrained:
    """Read ``--pretrained`` (run directory or export file) into the trained backbone and its random-init twin."""
    path, run_dir = resolve_export_path(text)
    try:
        d = load_export(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--pretrained: {e}") from None
    trained = backbone_from_export(d)
    random_init, how = build_random_init(d)
    return Pretrained(path, run_dir, d, trained, random_init, how)


def is_vit(model: nn.Module) -> bool:
    return getattr(model, "cls_token", None) is not None and hasattr(model, "get_intermediate_layers")


def eval_out_dir(p: Pretrained, name: str) -> Path:
    """The default output folder of evaluation ``name``: ``RUN_DIR/<name>`` for a run directory (or
    RUN_DIR/backbone.pt); ``<dir>/<stem>_<name>`` for another export file."""
    if p.export_path.name == "backbone.pt":
        return p.run_dir / name
    return p.run_dir / f"{p.export_path.stem}_{name}"


def labels_note(labels: dict | None) -> str:
    """The printed note on the labelled images of a semi-supervised run; empty when every label is used."""
    if labels is None:
        return ""
    how = (f"{100 * labels['fraction']:g} % (data.label_seed {labels['seed']})" if "fraction" in labels
           else f"the images of {labels['subset_file']}")
    return f"; labels: {how}, {labels['images']} of {labels['of']} images, {labels['per_class_min']}+ per class"
