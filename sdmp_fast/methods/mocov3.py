"""MoCo v3, with or without SDMP (MoCo v3: arXiv 2104.02057; SDMP: arXiv 2206.07692; docs/method.md, MoCo v3
and SDMP for MoCo v3).

Baseline: symmetric InfoNCE ``2T * (CE(q1, k2) + CE(q2, k1))`` with keys from the momentum encoder (backbone +
projector) gathered over ranks, queries from the base encoder (backbone + projector + predictor); the
momentum encoder is updated before the keys are computed (``ema_before_forward``). SDMP "replace" (the
paper's headline setting): the base encoder sees a and mix(b), the momentum encoder a, mix(a) and b. SDMP
"extra" (Table 9): four views; the full clean loss on views 1/2 plus the source and mix terms with weight 1
from mix(view 3) as query against clean and mixed view 4 as keys. Partners are paired inside each rank's
batch (row i with row B-1-i): images never cross ranks, only keys are gathered.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sdmp_fast import dist
from sdmp_fast.augment.recipes import Recipe, mocov3_recipe
from sdmp_fast.kernels import select_mixer
from sdmp_fast.losses import infonce_loss, moco_sdmp_loss
from sdmp_fast.methods.base import Method
from sdmp_fast.mixing import Mixer
from sdmp_fast.models.heads import build_mlp
from sdmp_fast.models.norm import encode
from sdmp_fast.registry import METHODS
from sdmp_fast.streams import StepRandom


@dataclass
class MoCoViews:
    """The views of one SDMP step ([B, 3, H, W] each) and the lam_eff of the mixed ones ([B] float32).

    Replace variant: (a, b) are views (1, 2), or (2, 1) after the shared coin. Extra variant: b is view 3
    (mixed for the query) and a is view 4 (keys: clean and mixed).
    """
    a: torch.Tensor
    b: torch.Tensor
    b_mix: torch.Tensor
    a_mix: torch.Tensor
    lam_q: torch.Tensor  # lam_eff of b_mix, the mixed query
    lam_k: torch.Tensor  # lam_eff of a_mix, the mixed key
    op: str | torch.Tensor  # as the Mixer drew it (a name, or a device code)


class _Encoder(nn.Module):
    """Backbone followed by the projector (and, for the base encoder, the predictor)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, predictor: nn.Module | None = None):
        super().__init__()
        self.backbone, self.projector = backbone, projector
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projector(self.backbone(x))
        return self.predictor(z) if self.predictor is not None else z


@METHODS.register("mocov3", help="MoCo v3 (symmetric InfoNCE, momentum encoder); + SDMP with sdmp.enabled=true")
class MoCoV3(Method):
    ema_before_forward = True

    def __init__(self, backbone: nn.Module, feat_dim: int, proj_layers: int = 3, hidden_dim: int = 4096,
                 out_dim: int = 256, pred_last_bn: bool = True, temperature: float = 0.2,
                 mixer: Mixer | None = None, variant: str = "replace",
                 weights: tuple[float, float, float] = (1.0, 0.5, 0.5)):
        """``mixer``: SDMP's op draw and mixing (None: plain MoCo v3)."""
        super().__init__()
        projector = build_mlp(proj_layers, feat_dim, hidden_dim, out_dim, last_bn=True)
        predictor = build_mlp(2, out_dim, hidden_dim, out_dim, last_bn=pred_last_bn)
        self.student = _Encoder(backbone, projector, predictor)
        self.teacher = _Encoder(copy.deepcopy(backbone), copy.deepcopy(projector))
        self.teacher.requires_grad_(False)
        self.temperature = temperature
        self.mixer, self.sdmp = mixer, mixer is not None
        self.variant, self.weights = variant, tuple(weights)

    @classmethod
    def from_config(cls, cfg, backbone: nn.Module) -> "MoCoV3":
        m, s = cfg.method, cfg.sdmp
        return cls(backbone, backbone.num_features, proj_layers=m.proj_layers, hidden_dim=m.hidden_dim,
                   out_dim=m.out_dim, pred_last_bn=m.pred_last_bn, temperature=m.temperature,
                   mixer=select_mixer(cfg), variant=s.variant, weights=s.weights)

    @staticmethod
    def recipe(cfg) -> Recipe:
        views = 4 if cfg.sdmp.enabled and cfg.sdmp.variant == "extra" else 2
        return mocov3_recipe(cfg.data.image_size, cfg.data.crop_min, cfg.data.mean, cfg.data.std, num_views=views,
                             interpolation=cfg.data.interpolation)

    def student_parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters())

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        t = list(self.teacher.backbone.parameters()) + list(self.teacher.projector.parameters())
        s = list(self.student.backbone.parameters()) + list(self.student.projector.parameters())
        return t, s

    def export_backbone(self) -> nn.Module:
        return self.student.backbone  # MoCo v3 evaluates the base encoder

    def compile_targets(self) -> list[nn.Module]:
        return [self.student.backbone, self.teacher.backbone]

    def _queries(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """Queries of each view: one base-encoder forward over the concatenated views (``run.fused``) with
        per-view BatchNorm statistics (``models.norm.encode``), equal to one forward per view up to float
        rounding (tests/methods/test_fast_step.py)."""
        return encode(self.student, xs, self.fused)

    @torch.no_grad()
    def _keys(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """Momentum keys of each view, gathered over ranks: [N, D] each (N = world x B).

        Fused: one teacher forward of the concatenated views and ONE all-gather of all their keys,
        whose [world, views, B, D] layout is then split per view (each rank's rows stay at rank*B...).
        """
        if not self.fused or len(xs) == 1:
            return [dist.all_gather_cat(self.teacher(x).float()) for x in xs]
        n, B = len(xs), xs[0].shape[0]
        keys = dist.all_gather_cat(torch.cat(encode(self.teacher, xs, True)).float())    # [world*n*B, D]
        D = keys.shape[-1]
        return list(keys.view(-1, n, B, D).transpose(0, 1).reshape(n, -1, D).unbind(0))

    def sdmp_views(self, views: list[torch.Tensor], rng: StepRandom) -> MoCoViews:
        """The views of one SDMP step. Draws in order: the view-swap coin (replace variant) and the op on the
        shared stream, then lam and the boxes of mix(b) and of mix(a) on the rank's own stream: one lam per
        image for both mixed views, independent box positions."""
        if self.variant == "replace":
            a, b = self.mixer.swap(views[0], views[1], rng)
        else:
            b, a = views[2], views[3]
        op = self.mixer.draw_op(rng, a.device)
        lam = self.mixer.lam(a.shape[0], rng, a.device)
        b_mix, lam_q = self.mixer.mix(b, lam, op, rng)
        a_mix, lam_k = self.mixer.mix(a, lam, op, rng)
        return MoCoViews(a, b, b_mix, a_mix, lam_q, lam_k, op)

    def view_grid(self, views: list[torch.Tensor], index: torch.Tensor, rng: StepRandom):
        """Columns a, b, b_mix, a_mix of ``--dump-views``, with the partner id and lam_eff per sample."""
        mv = self.sdmp_views(views, rng)
        B = mv.a.shape[0]
        lam_q, lam_k, idx = mv.lam_q.cpu().tolist(), mv.lam_k.cpu().tolist(), index.cpu().tolist()
        captions = {
            "a": [f"#{idx[i]}" for i in range(B)],
            "b": [f"partner #{idx[B - 1 - i]}" for i in range(B)],
            "b_mix": [f"lam_eff {lam_q[i]:.2f}" for i in range(B)],
            "a_mix": [f"lam_eff {lam_k[i]:.2f}" for i in range(B)],
        }
        title = f"SDMP views, op = {self.mixer.label(mv.op)}; row i is mixed with row B-1-i (B = {B})"
        return {"a": mv.a, "b": mv.b, "b_mix": mv.b_mix, "a_mix": mv.a_mix}, captions, title

    def forward(self, views: list[torch.Tensor], rng: StepRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        T, rank = self.temperature, dist.get_rank()
        if not self.sdmp:
            v1, v2 = views[0], views[1]
            q1, q2 = self._queries(v1, v2)
            k1, k2 = self._keys(v1, v2)
            loss = infonce_loss(q1, k2, T, rank) + infonce_loss(q2, k1, T, rank)
            return loss, {"loss": loss.detach()}
        mv = self.sdmp_views(views, rng)
        if self.variant == "replace":
            q_a, q_bm = self._queries(mv.a, mv.b_mix)
            k_a, k_am, k_b = self._keys(mv.a, mv.a_mix, mv.b)
            out = moco_sdmp_loss(q_a, q_bm, k_a, k_am, k_b, mv.lam_q, mv.lam_k, T, rank=rank, weights=self.weights)
            return out["loss"], {k: v.detach() for k, v in out.items()} | {"lam_eff": mv.lam_q.mean()}
        # "extra": clean symmetric loss on views 1/2, SDMP terms (weight 1) on mix(view 3) vs view 4 and mix(view 4)
        v1, v2 = views[0], views[1]
        q1, q2, q3m = self._queries(v1, v2, mv.b_mix)
        k1, k2, k4, k4m = self._keys(v1, v2, mv.a, mv.a_mix)
        clean = infonce_loss(q1, k2, T, rank) + infonce_loss(q2, k1, T, rank)
        out = moco_sdmp_loss(q1, q3m, k4, k4m, k2, mv.lam_q, mv.lam_k, T, rank=rank, weights=(0.0, 1.0, 1.0))
        loss = clean + out["loss"]
        return loss, {"loss": loss.detach(), "clean": clean.detach() / (4 * T), "source": out["source"].detach(),
                      "mix": out["mix"].detach(), "lam_eff": mv.lam_q.mean()}
