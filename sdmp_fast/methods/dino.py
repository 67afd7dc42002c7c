"""DINO, with or without SDMP (DINO: arXiv 2104.14294; SDMP: arXiv 2206.07692 §3.3; docs/method.md, DINO and
SDMP for DINO).

Student = backbone + DINO head, trained by AdamW; teacher = a copy of it without drop-path, updated only by
EMA after the optimizer step (``ema_before_forward = False``); ``export_backbone`` returns the teacher's
backbone, which DINO evaluates. Multi-crop views arrive in Batch order: 2 global views, then L local views.
DINO + SDMP (``sdmp.enabled``) replaces the last L - L//2 local views by mixed ones, adds the mix teacher
(the teacher's view of mix(global 1)) and the loss terms ``L_s + L_m`` (Eq. 9, unit weights).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sdmp_fast.augment.recipes import Recipe, dino_recipe
from sdmp_fast.kernels import select_mixer
from sdmp_fast.losses.dino import dino_loss, dino_sdmp_terms, student_log_probs, teacher_probs, update_center
from sdmp_fast.methods.base import Method
from sdmp_fast.mixing import Mixer
from sdmp_fast.models.heads import DINOHead
from sdmp_fast.registry import METHODS
from sdmp_fast.schedules import at, warmup_constant
from sdmp_fast.schema import ConfigError
from sdmp_fast.streams import StepRandom

NUM_GLOBALS = 2


@dataclass
class DINOViews:
    """The views of one DINO + SDMP step ([B, 3, s, s] each; lam_eff [B] float32 per mixed view)."""
    globals: list[torch.Tensor]          # [G1, G2], clean: the teacher's source views
    student_globals: list[torch.Tensor]  # [G1, G2], or [G1, mix(G2)] with sdmp.mix_global_student
    clean_locals: list[torch.Tensor]
    mixed_locals: list[torch.Tensor]
    lam_locals: torch.Tensor             # [V_l, B] lam_eff of each mixed local view
    global_mix: torch.Tensor             # mix(G1), the mix teacher's view
    lam_global: torch.Tensor             # [B] lam_eff of global_mix
    lam_student_global: torch.Tensor | None  # [B] lam_eff of mix(G2) (mix_global_student), else None
    op: str | torch.Tensor               # as the Mixer drew it (a name, or a device code)


class _Network(nn.Module):
    """Backbone followed by the DINO head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _drop_path_free(backbone: nn.Module) -> nn.Module:
    """Replace timm's stochastic-depth modules with identities (parameter-free, so the EMA pairs are unchanged)."""
    for block in getattr(backbone, "blocks", []):
        for name in ("drop_path1", "drop_path2", "drop_path"):
            if isinstance(getattr(block, name, None), nn.Module):
                setattr(block, name, nn.Identity())
    return backbone


@METHODS.register("dino", help="DINO (self-distillation, multi-crop, centring); "
                                "+ SDMP source/mix teachers with sdmp.enabled=true")
class DINO(Method):
    ema_before_forward = False

    def __init__(self, backbone: nn.Module, feat_dim: int, num_locals: int, out_dim: int = 65536,
                 hidden_dim: int = 2048, bottleneck_dim: int = 256, norm_last_layer: bool = True,
                 student_temp: float = 0.1, teacher_temp: float = 0.07, warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: float = 30.0, center_momentum: float = 0.9,
                 freeze_last_layer: float = 1.0, mixer: Mixer | None = None,
                 mix_global_student: bool = False, center_from_mixed: bool = False):
        """``mixer``: SDMP's op draw and mixing (None: plain DINO)."""
        super().__init__()
        head = DINOHead(feat_dim, out_dim, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer)
        self.student = _Network(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        _drop_path_free(self.teacher.backbone)
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.num_locals = num_locals
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.teacher_temp_final, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_epochs, self.freeze_last_layer_epochs = warmup_teacher_temp_epochs, freeze_last_layer
        self.mixer, self.sdmp = mixer, mixer is not None
        self.mix_global_student, self.center_from_mixed = mix_global_student, center_from_mixed
        # SDMP mixes local views L//2 ... L-1 (with an odd L, the larger half)
        self.num_clean_locals = num_locals // 2 if self.sdmp else num_locals
        # Until prepare() is called (direct use, tests): the step-0 temperature and no freezing.
        self.teacher_temp_table = torch.tensor([warmup_teacher_temp if warmup_teacher_temp_epochs > 0 else teacher_temp],
                                               dtype=torch.float64)
        self.freeze_steps = 0
        self._temp_host = self.teacher_temp_table.tolist()
        self._temp_device = self.teacher_temp_table.float()
        self.teacher_temp = self.teacher_temp_t = self._temp_host[0]

    @classmethod
    def from_config(cls, cfg, backbone: nn.Module) -> "DINO":
        m, s, d = cfg.method, cfg.sdmp, cfg.data
        fixed_size = hasattr(backbone, "patch_embed") and not getattr(backbone, "dynamic_img_size", False)
        if d.local_crops and d.local_size != d.image_size and fixed_size:
            raise ConfigError(f"model.backbone = {cfg.model.backbone!r} only takes {d.image_size} px inputs, but DINO's "
                              f"local crops are {d.local_size} px (data.local_size): use a DINO-form backbone "
                              "(vit_tiny_p4_dino, vit_tiny_p4_dyn, vit_small_dino, vit_base_dino), whose position embedding is interpolated")
        return cls(backbone, backbone.num_features, num_locals=cfg.data.local_crops, out_dim=m.dino_out_dim,
                   hidden_dim=m.dino_hidden_dim, bottleneck_dim=m.dino_bottleneck_dim,
                   norm_last_layer=m.norm_last_layer, student_temp=m.student_temp, teacher_temp=m.teacher_temp,
                   warmup_teacher_temp=m.warmup_teacher_temp, warmup_teacher_temp_epochs=m.warmup_teacher_temp_epochs,
                   center_momentum=m.center_momentum, freeze_last_layer=m.freeze_last_layer,
                   mixer=select_mixer(cfg), mix_global_student=s.mix_global_student,
                   center_from_mixed=s.center_from_mixed)

    @staticmethod
    def recipe(cfg) -> Recipe:
        d = cfg.data
        return dino_recipe(d.image_size, d.local_size, d.local_crops, d.global_scale, d.local_scale, d.mean, d.std,
                           interpolation=d.interpolation)

    # ------------------------------------------------------------------ trainer hooks

    def student_parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters())

    def param_groups(self) -> list[dict]:
        """DINO's groups: no weight decay on biases and 1-D (norm) parameters, decay on the rest.

        As in DINO, the rest includes the position embedding, the class token and (when trainable) the
        weight-norm gain g of the last layer, whose shape is [K, 1].
        """
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "apply_wd": False}]

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.teacher.parameters()), list(self.student.parameters())

    def export_backbone(self) -> nn.Module:
        return self.teacher.backbone  # DINO evaluates the teacher

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return list(self.student.head.last_layer.parameters())

    def prepare(self, res) -> None:
        """Per-step tables. The teacher temperature warm-up is a per-step ramp: DINO's table is per epoch, which
        does not exist for sub-epoch runs; at ImageNet scale the two differ by at most one epoch's increment."""
        spe = res.steps_per_epoch
        warm = int(round(self.warmup_teacher_temp_epochs * spe))
        self.teacher_temp_table = warmup_constant(self.warmup_teacher_temp, self.teacher_temp_final,
                                                  res.total_steps, warm)
        self.freeze_steps = int(round(self.freeze_last_layer_epochs * spe))
        self._temp_host = self.teacher_temp_table.tolist()
        self._temp_device = self.teacher_temp_table.to(self.center.device, torch.float32)
        self.set_step(0)

    def set_step(self, step: int, step_t: torch.Tensor | None = None) -> None:
        """The log value from the host table; the value the loss uses from the device table at ``step_t``."""
        last = len(self._temp_host) - 1
        self.teacher_temp = self._temp_host[min(step, last)]
        if step_t is not None:
            if self._temp_device.device != step_t.device:  # prepared before the move to the device: once
                self._temp_device = self._temp_device.to(step_t.device)
            self.teacher_temp_t = at(self._temp_device, step_t.clamp(max=last))
        else:
            self.teacher_temp_t = self.teacher_temp

    def compile_targets(self) -> list[nn.Module]:
        return [self.student.backbone, self.teacher.backbone]

    def after_backward(self, step: int) -> None:
        if step < self.freeze_steps:
            for p in self.last_layer_parameters():
                p.grad = None  # AdamW skips parameters without a gradient: no update, no weight decay

    def phase(self, step: int) -> int:
        """1 while the last layer is frozen (the first ``freeze_last_layer`` epochs), else 0."""
        return int(step < self.freeze_steps)

    def step_info(self) -> dict[str, float]:
        return {"teacher_temp": self.teacher_temp}

    # ------------------------------------------------------------------ views

    def sdmp_views(self, views: list[torch.Tensor], rng: StepRandom) -> DINOViews:
        """The views of one DINO + SDMP step (docs/method.md, SDMP for DINO).

        One op and one lam per image mix every mixed view with the same crop slot of the partner image
        B-1-i of the rank's batch (independent boxes, and one lam_eff per view and image: box rounding
        differs between resolutions). Draws in order: the op (shared stream), lam, then the boxes of mix(G1)
        for the teacher, of mix(G2) for the student (``mix_global_student``) and of each mixed local view in
        slot order. The mix teacher sees one mixed global view: "both globals mixed" would cost another
        teacher forward.
        """
        g1, g2 = views[0], views[1]
        locals_ = list(views[NUM_GLOBALS:])
        op = self.mixer.draw_op(rng, g1.device)
        lam = self.mixer.lam(g1.shape[0], rng, g1.device)
        g_mix, lam_global = self.mixer.mix(g1, lam, op, rng)
        student_globals, lam_sg = [g1, g2], None
        if self.mix_global_student:
            g2_mix, lam_sg = self.mixer.mix(g2, lam, op, rng)
            student_globals = [g1, g2_mix]
        n_clean = self.num_clean_locals
        mixed = [self.mixer.mix(x, lam, op, rng) for x in locals_[n_clean:]]
        lam_locals = torch.stack([m[1] for m in mixed]) if mixed else lam.new_zeros(0, lam.shape[0])
        return DINOViews([g1, g2], student_globals, locals_[:n_clean], [m[0] for m in mixed], lam_locals,
                         g_mix, lam_global, lam_sg, op)

    def view_grid(self, views: list[torch.Tensor], index: torch.Tensor, rng: StepRandom):
        """Columns: globals 1 and 2 (as the student sees them), the teacher's mix(global 1), clean and mixed locals."""
        mv = self.sdmp_views(views, rng)
        B = views[0].shape[0]
        idx = index.cpu().tolist()
        lam_g = mv.lam_global.cpu().tolist()
        cols = {"global 1": mv.student_globals[0],
                "global 2" + (" mix" if self.mix_global_student else ""): mv.student_globals[1],
                "teacher mix(g1)": mv.global_mix}
        caps = {"global 1": [f"#{idx[i]} + partner #{idx[B - 1 - i]}" for i in range(B)],
                "teacher mix(g1)": [f"lam_eff {lam_g[i]:.2f}" for i in range(B)]}
        if self.mix_global_student:
            lam_sg = mv.lam_student_global.cpu().tolist()
            caps["global 2 mix"] = [f"lam_eff {lam_sg[i]:.2f}" for i in range(B)]
        for v, x in enumerate(mv.clean_locals):
            cols[f"local {v}"] = x
        lam_l = mv.lam_locals.cpu().tolist()
        for j, x in enumerate(mv.mixed_locals):
            name = f"local {self.num_clean_locals + j} mix"
            cols[name] = x
            caps[name] = [f"lam_eff {lam_l[j][i]:.2f}" for i in range(B)]
        title = (f"DINO + SDMP views, op = {self.mixer.label(mv.op)}; row i is mixed with row B-1-i (B = {B}); "
                 f"local crops shown enlarged")
        return cols, caps, title

    # ------------------------------------------------------------------ step

    def _forward(self, net: nn.Module, xs: list[torch.Tensor]) -> torch.Tensor:
        """``net`` on the concatenated views ([V*B, K]): one forward (``run.fused``, DINO's own way: BatchNorm,
        where a backbone has it, over all views together) or one forward per view (``run.fused=false``)."""
        return net(torch.cat(xs)) if self.fused else torch.cat([net(x) for x in xs])

    def forward(self, views: list[torch.Tensor], rng: StepRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B = views[0].shape[0]
        if len(views) != NUM_GLOBALS + self.num_locals:
            raise ValueError(f"DINO expects {NUM_GLOBALS} global + {self.num_locals} local views, got {len(views)}")
        if not self.sdmp:
            teacher_in, student_globals, locals_in = views[:NUM_GLOBALS], views[:NUM_GLOBALS], list(views[NUM_GLOBALS:])
            n_clean_locals = len(locals_in)
        else:
            mv = self.sdmp_views(views, rng)
            teacher_in = mv.globals + [mv.global_mix]  # [G1, G2, Gm]: one forward (the head has no BatchNorm)
            student_globals = mv.student_globals
            locals_in = mv.clean_locals + mv.mixed_locals
            n_clean_locals = len(mv.clean_locals)

        with torch.no_grad():
            t_out = self._forward(self.teacher, teacher_in)                               # [(2|3)B, K]
        s_out = [self._forward(self.student, student_globals)]                            # one forward per resolution
        if locals_in:
            s_out.append(self._forward(self.student, locals_in))
        K = t_out.shape[-1]
        probs = teacher_probs(t_out, self.center, self.teacher_temp_t).view(-1, B, K)       # computed once, reused
        logp = student_log_probs(torch.cat(s_out), self.student_temp).view(-1, B, K)      # [2 + L, B, K]
        p_clean = probs[:NUM_GLOBALS]

        if not self.sdmp:
            loss = dino_loss(logp, p_clean)
            logs = {"loss": loss.detach()}
        else:
            n_clean = NUM_GLOBALS + n_clean_locals          # rows [G1, G2, clean locals | mixed locals]
            clean, mixed, lam_mixed = logp[:n_clean], logp[n_clean:], mv.lam_locals
            source_mask, shared = None, None
            # L_DINO over the clean student views only; L_s and L_m over the mixed ones
            if self.mix_global_student:  # the student's global 2 is mixed: move its row to the mixed views
                clean = torch.cat([logp[:1], logp[NUM_GLOBALS:n_clean]])
                mixed = torch.cat([logp[1:2], mixed])
                lam_mixed = torch.cat([mv.lam_student_global[None], lam_mixed])
                shared = 1
                # made on the device (a host tensor copied per step would sync): mix(G2) is not
                # distilled from the teacher's clean G2, the same crop
                source_mask = torch.ones(mixed.shape[0], NUM_GLOBALS, dtype=torch.bool, device=logp.device)
                source_mask[0:1, 1:2] = False  # a slice: an async fill (a single-element setitem copies from the host)
            dino = dino_loss(clean, p_clean, shared_views=shared)
            terms = dino_sdmp_terms(p_clean, probs[NUM_GLOBALS], mixed, lam_mixed, mv.lam_global, source_mask)
            loss = dino + terms["source"] + terms["mix"]
            logs = {"loss": loss.detach(), "dino": dino.detach(), "source": terms["source"].detach(),
                    "mix": terms["mix"].detach(), "lam_eff": lam_mixed.mean()}

        # collapse monitors (read only at logging points): teacher entropy near ln K = uniform collapse,
        # near 0 = one-hot collapse; the student's entropy on the clean globals beside it
        with torch.no_grad():
            logs["t_entropy"] = -(p_clean * p_clean.clamp_min(1e-12).log()).sum(-1).mean()
            logs["s_entropy"] = -(logp[:NUM_GLOBALS].exp() * logp[:NUM_GLOBALS]).sum(-1).mean()
        # the centre moves once per step, after the loss has used it (forward's only side effect); from the
        # clean global teacher outputs, and the mixed global's with sdmp.center_from_mixed
        n_center = t_out.shape[0] if (self.sdmp and self.center_from_mixed) else NUM_GLOBALS * B
        self.center.copy_(update_center(self.center, t_out[:n_center], self.center_momentum))
        return loss, logs
