"""MoCo v3, with or without SDMP (arXiv 2104.02057; SDMP: arXiv 2206.07692, SDMP_SPEC §1.5, §2).

Baseline: symmetric InfoNCE ``2T * (CE(q1, k2) + CE(q2, k1))`` with keys from the momentum encoder
(backbone + projector) gathered over ranks, queries from the base encoder (backbone + projector +
predictor). The momentum encoder is updated before the keys are computed (``ema_before_forward``).

SDMP "replace" variant (the paper's headline setting): one coin per step (the shared stream, so every
rank agrees) swaps the two views into (a, b); one op per step is drawn uniformly from ``sdmp.ops``
(shared stream); lambda ~ Beta(alpha, alpha) per sample (local stream), the same lambda for both mixed
views with independent box positions. The student sees a and mix(b); the momentum encoder sees a,
mix(a) and b. Partners are paired inside each rank's local batch (row i with row B-1-i): images never
cross ranks, only keys are gathered.

Fused pass (``run.fused``, default): the base encoder runs once on the concatenated query views
(baseline [v1; v2], replace [a; b_mix]) and the momentum encoder once on its views ([a; a_mix; b]),
with per-view BatchNorm statistics (``models.norm.encode``); the keys of all views are gathered in one
all-gather. Equal to one forward per view up to float rounding (tests/methods/test_fast_step.py).

SDMP "extra" variant (Table 9): four views; the full symmetric clean loss on views 1/2 plus the
source and mix terms with weight 1 from mix(view 3) as query against clean and mixed view 4 as keys.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from sdmp_fast import dist
from sdmp_fast.losses import infonce_loss, moco_sdmp_loss
from sdmp_fast.kernels import select_mix
from sdmp_fast.mixing import mix_selected, sample_lam
from sdmp_fast.models.heads import build_mlp
from sdmp_fast.registry import METHODS
from sdmp_fast.augment.recipes import Recipe, mocov3_recipe

from sdmp_fast.methods.base import Method
from sdmp_fast.streams import StepRandom
from sdmp_fast.models.norm import encode


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
                 sdmp: bool = False, variant: str = "replace", ops: tuple[str, ...] = ("mixup", "cutmix", "resizemix"),
                 alpha: float = 1.0, weights: tuple[float, float, float] = (1.0, 0.5, 0.5), impl: str = "torch"):
        super().__init__()
        projector = build_mlp(proj_layers, feat_dim, hidden_dim, out_dim, last_bn=True)
        predictor = build_mlp(2, out_dim, hidden_dim, out_dim, last_bn=pred_last_bn)
        self.student = _Encoder(backbone, projector, predictor)
        self.teacher = _Encoder(copy.deepcopy(backbone), copy.deepcopy(projector))
        self.teacher.requires_grad_(False)
        self.temperature = temperature
        self.sdmp, self.variant, self.ops, self.alpha, self.weights = sdmp, variant, tuple(ops), alpha, tuple(weights)
        self.mix = select_mix(impl if sdmp else "torch")  # sdmp.impl, chosen once

    @classmethod
    def from_config(cls, cfg, backbone: nn.Module) -> "MoCoV3":
        m, s = cfg.method, cfg.sdmp
        return cls(backbone, backbone.num_features, proj_layers=m.proj_layers, hidden_dim=m.hidden_dim,
                   out_dim=m.out_dim, pred_last_bn=m.pred_last_bn, temperature=m.temperature,
                   sdmp=s.enabled, variant=s.variant, ops=s.ops, alpha=s.alpha, weights=s.weights, impl=s.impl)

    @staticmethod
    def recipe(cfg) -> Recipe:
        views = 4 if cfg.sdmp.enabled and cfg.sdmp.variant == "extra" else 2
        return mocov3_recipe(cfg.data.image_size, cfg.data.crop_min, cfg.data.mean, cfg.data.std, num_views=views)

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

    def _mix_pair(self, x: torch.Tensor, y: torch.Tensor, rng: StepRandom):
        """Mix two views of the same images with one op and one lambda per image (independent boxes)."""
        if self.device_draws:  # the op as a device value (shared device stream: the same on every rank)
            op_i = torch.randint(len(self.ops), (), generator=rng.shared_device, device=x.device)
            lam = sample_lam(x.shape[0], self.alpha, generator=rng.local, device=x.device)
            x_mix, lam_x = mix_selected(x, lam, op_i, self.ops, generator=rng.local)
            y_mix, lam_y = mix_selected(y, lam, op_i, self.ops, generator=rng.local)
            return x_mix, lam_x, y_mix, lam_y, "drawn on the device"
        op = self.ops[rng.shared.choice(len(self.ops))]
        lam = sample_lam(x.shape[0], self.alpha, generator=rng.local, device=x.device)
        x_mix, lam_x = self.mix(x, lam, op, generator=rng.local)
        y_mix, lam_y = self.mix(y, lam, op, generator=rng.local)
        return x_mix, lam_x, y_mix, lam_y, op

    def sdmp_views(self, views: list[torch.Tensor], rng: StepRandom) -> dict:
        """The views of one SDMP step: {"a", "b", "b_mix", "a_mix", "lam_q", "lam_k", "op"}.

        Replace variant: (a, b) are views (1, 2) or, after the shared coin, (2, 1). Extra variant: b is
        view 3 (mixed for the query) and a is view 4 (keys: clean and mixed).
        """
        if self.variant == "replace":
            a, b = views[0], views[1]
            if self.device_draws:  # the coin as a device value: a select, no branch
                swap = torch.rand((), generator=rng.shared_device, device=a.device) < 0.5
                a, b = torch.where(swap, b, a), torch.where(swap, a, b)
            elif rng.shared.coin():  # shared coin: host stream, no device sync
                a, b = b, a
        else:
            b, a = views[2], views[3]
        b_mix, lam_q, a_mix, lam_k, op = self._mix_pair(b, a, rng)
        return {"a": a, "b": b, "b_mix": b_mix, "a_mix": a_mix, "lam_q": lam_q, "lam_k": lam_k, "op": op}

    def view_grid(self, views: list[torch.Tensor], index: torch.Tensor, rng: StepRandom):
        """Columns a, b, b_mix, a_mix of ``--dump-views``, with the partner id and lam_eff per sample."""
        mv = self.sdmp_views(views, rng)
        B = mv["a"].shape[0]
        lam_q, lam_k, idx = mv["lam_q"].cpu().tolist(), mv["lam_k"].cpu().tolist(), index.cpu().tolist()
        captions = {
            "a": [f"#{idx[i]}" for i in range(B)],
            "b": [f"partner #{idx[B - 1 - i]}" for i in range(B)],
            "b_mix": [f"lam_eff {lam_q[i]:.2f}" for i in range(B)],
            "a_mix": [f"lam_eff {lam_k[i]:.2f}" for i in range(B)],
        }
        title = f"SDMP views, op = {mv['op']}; row i is mixed with row B-1-i (B = {B})"
        return {k: mv[k] for k in ("a", "b", "b_mix", "a_mix")}, captions, title

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
            q_a, q_bm = self._queries(mv["a"], mv["b_mix"])
            k_a, k_am, k_b = self._keys(mv["a"], mv["a_mix"], mv["b"])
            out = moco_sdmp_loss(q_a, q_bm, k_a, k_am, k_b, mv["lam_q"], mv["lam_k"], T, rank=rank, weights=self.weights)
            return out["loss"], {k: v.detach() for k, v in out.items()} | {"lam_eff": mv["lam_q"].mean()}
        # "extra": clean symmetric loss on views 1/2, SDMP terms (weight 1) on mix(view 3) vs view 4 and mix(view 4)
        v1, v2 = views[0], views[1]
        q1, q2, q3m = self._queries(v1, v2, mv["b_mix"])
        k1, k2, k4, k4m = self._keys(v1, v2, mv["a"], mv["a_mix"])
        clean = infonce_loss(q1, k2, T, rank) + infonce_loss(q2, k1, T, rank)
        out = moco_sdmp_loss(q1, q3m, k4, k4m, k2, mv["lam_q"], mv["lam_k"], T, rank=rank, weights=(0.0, 1.0, 1.0))
        loss = clean + out["loss"]
        return loss, {"loss": loss.detach(), "clean": clean.detach() / (4 * T), "source": out["source"].detach(),
                      "mix": out["mix"].detach(), "lam_eff": mv["lam_q"].mean()}
