"""DINO and DINO + SDMP as methods: fused forwards vs per-view pieces, trainer hooks, learning."""
from pathlib import Path

import pytest
import torch

import loaders  # noqa: F401
from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.losses.dino import dino_loss, dino_sdmp_terms, student_log_probs, teacher_probs
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.mixing import mix, sample_lam
from sdmp_fast.models import build_backbone
from sdmp_fast.registry import LOADERS
from sdmp_fast.streams import StepRandom

# 51200 synthetic samples / batch 16 = 3200 steps per epoch
TINY = ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.batch_size=16", "data.image_size=16",
        "data.local_size=8", "data.local_crops=4", "method.dino_out_dim=64", "method.dino_hidden_dim=64",
        "method.dino_bottleneck_dim=32", "run.max_steps=40", "optim.warmup_epochs=0",
        "method.freeze_last_layer=0", "method.warmup_teacher_temp_epochs=0"]
CPU = torch.device("cpu")


def _setup(overrides):
    cfg = load_config(None, TINY + overrides)
    torch.manual_seed(0)
    method = build_method(cfg, build_backbone(cfg)).to(memory_format=torch.channels_last)
    ld = LOADERS.build("synthetic", cfg, method_recipe(cfg), rank=0, world=1, device="cpu")
    trainer = Trainer(cfg, resolve(cfg, ld.num_samples), method, ld, CPU, Path("/tmp"))
    return cfg, method, next(iter(ld)).views, trainer


def _clone_rng(seed=0):
    return StepRandom.create(seed, 0, CPU)


def test_baseline_forward_equals_per_view_pieces_and_only_the_student_learns():
    cfg, method, views, _ = _setup(["sdmp.enabled=false", "method.center_momentum=0.5"])
    assert [v.shape[-1] for v in views] == [16, 16, 8, 8, 8, 8]
    c0 = method.center.clone()
    loss, _ = method(views, _clone_rng())
    with torch.no_grad():
        t = torch.stack([method.teacher(v) for v in views[:2]])
    s = torch.stack([method.student(v) for v in views])
    ref = dino_loss(student_log_probs(s, 0.1), teacher_probs(t, c0, method.teacher_temp))
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(method.center, 0.5 * c0 + 0.5 * t.flatten(0, 1).mean(0, keepdim=True), atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    trainable = [p for p in method.student.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    gain = method.student.head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad and torch.equal(gain, torch.ones_like(gain))  # norm_last_layer: g fixed to 1
    assert method.export_backbone() is method.teacher.backbone
    assert not any("DropPath" in type(m).__name__ for m in method.teacher.modules())


@pytest.mark.parametrize("mix_global", [False, True])
def test_sdmp_forward_equals_per_view_pieces(mix_global):
    extra = ["sdmp.mix_global_student=true", "data.local_crops=2"] if mix_global else []
    cfg, method, views, _ = _setup(["sdmp.enabled=true", "sdmp.ops=cutmix"] + extra)
    loss, logs = method(views, _clone_rng())
    # the same draws, replayed by hand in the documented order: op, lam, mix(G1), [mix(G2)], mixed locals
    rng = _clone_rng()
    rng.shared.choice(1)
    lam = sample_lam(16, 1.0, generator=rng.local)
    g_mix, lam_g = mix(views[0], lam, "cutmix", generator=rng.local)
    student_views, lam_mixed, mixed = list(views[:2]), [], []
    if mix_global:
        g2m, lam2 = mix(views[1], lam, "cutmix", generator=rng.local)
        mixed.append(g2m)
        lam_mixed.append(lam2)
        student_views = [views[0]]
    n_locals = len(views) - 2
    student_views += list(views[2:2 + n_locals // 2])
    for x in views[2 + n_locals // 2:]:
        xm, lm = mix(x, lam, "cutmix", generator=rng.local)
        mixed.append(xm)
        lam_mixed.append(lm)
    with torch.no_grad():
        t = torch.stack([method.teacher(v) for v in [views[0], views[1], g_mix]])
        p = teacher_probs(t, torch.zeros(1, 64), method.teacher_temp)
        s_clean = student_log_probs(torch.stack([method.student(v) for v in student_views]), 0.1)
        s_mix = student_log_probs(torch.stack([method.student(v) for v in mixed]), 0.1)
    dino = dino_loss(s_clean, p[:2], shared_views=1 if mix_global else 2)
    mask = None
    if mix_global:
        mask = torch.ones(len(mixed), 2, dtype=torch.bool)
        mask[0, 1] = False
    terms = dino_sdmp_terms(p[:2], p[2], s_mix, torch.stack(lam_mixed), lam_g, mask)
    assert torch.allclose(logs["dino"], dino, atol=1e-5)
    assert torch.allclose(logs["source"], terms["source"], atol=1e-5)
    assert torch.allclose(logs["mix"], terms["mix"], atol=1e-5)
    assert torch.allclose(loss, dino + terms["source"] + terms["mix"], atol=1e-5)
    # the centre moved from the clean globals only
    assert torch.allclose(method.center, 0.1 * t[:2].flatten(0, 1).mean(0, keepdim=True), atol=1e-6)


def test_last_layer_is_frozen_during_the_first_steps():
    # freeze_last_layer = 2 / 3200 epochs = 2 steps; g trainable (norm_last_layer false) and weight decay on
    _, method, views, trainer = _setup(["sdmp.enabled=false", f"method.freeze_last_layer={2 / 3200}",
                                        "method.norm_last_layer=false", "optim.weight_decay=0.5", "optim.lr=1e-3"])
    last = method.last_layer_parameters()
    assert len(last) == 2 and all(p.requires_grad for p in last)
    before = [p.detach().clone() for p in last]
    body = method.student.head.mlp[0].weight
    body0 = body.detach().clone()
    for _ in range(2):  # epoch fraction still frozen: no gradient, so AdamW applies neither update nor decay
        trainer.train_step(views)
        assert all(p.grad is None for p in last)
        assert all(torch.equal(p, b) for p, b in zip(last, before))
    assert not torch.equal(body, body0)
    trainer.train_step(views)  # step 2: trained
    assert all(p.grad is not None for p in last)
    assert not any(torch.equal(p, b) for p, b in zip(last, before))


def test_ema_runs_after_the_optimizer_step():
    _, method, views, trainer = _setup(["sdmp.enabled=false", "method.momentum=0.9", "method.momentum_final=0.9"])
    t0 = [p.detach().clone() for p in trainer.teacher_params]
    trainer.train_step(views)
    for t, a, s in zip(trainer.teacher_params, t0, trainer.student_params):
        assert torch.allclose(t, 0.9 * a + 0.1 * s.detach(), atol=1e-6)  # the student *after* its update
    assert any(not torch.equal(t, a) for t, a in zip(trainer.teacher_params, t0))


def test_param_groups_weight_decay_schedule_and_teacher_temperature():
    _, method, views, trainer = _setup(["sdmp.enabled=false", "optim.weight_decay=0.04", "optim.weight_decay_end=0.4",
                                        f"method.warmup_teacher_temp_epochs={20 / 3200}"])
    decay, no_decay = trainer.optimizer.param_groups
    named = dict(method.student.named_parameters())
    assert all(p.ndim > 1 for p in decay["params"])
    assert {id(p) for p in no_decay["params"]} == {id(p) for n, p in named.items()
                                                   if p.requires_grad and (n.endswith(".bias") or p.ndim == 1)}
    assert any(p is named["backbone.norm.weight"] for p in no_decay["params"])
    assert decay["weight_decay"] == 0.0 and no_decay["weight_decay"] == 0.0  # the trainer decays (device scalars)
    assert trainer.device_schedules
    w = decay["params"][0]
    trainer.step = 17
    w_before = w.detach().clone()
    trainer.train_step(views)
    assert 0.04 < trainer.wd[17] < 0.4
    # reference: torch's AdamW with the host weight decay of step 17 on the same gradient from the same state
    state = trainer.optimizer.state[w]
    ref = torch.optim.AdamW([torch.nn.Parameter(w_before.clone())], lr=float(trainer.lr[17]), betas=trainer.cfg.optim.betas,
                            weight_decay=float(trainer.wd[17]))
    ref.param_groups[0]["params"][0].grad = w.grad.clone()
    ref.step()
    assert int(state["step"]) == 1
    assert torch.allclose(ref.param_groups[0]["params"][0], w.detach(), rtol=1e-5, atol=1e-7)
    assert method.teacher_temp == pytest.approx(0.04 + 0.03 * 17 / 20)
    assert method.step_info() == {"teacher_temp": method.teacher_temp}
    method.set_step(25)
    assert method.teacher_temp == pytest.approx(0.07)


def test_centre_is_checkpointed_with_the_method():
    _, method, views, trainer = _setup(["sdmp.enabled=true"])
    trainer.train_step(views)
    state = method.state_dict()
    assert "center" in state and state["center"].abs().sum() > 0
    assert any("parametrizations.weight.original0" in k for k in state)
    _, other, _, _ = _setup(["sdmp.enabled=true"])
    other.load_state_dict(state)
    assert torch.equal(other.center, method.center)
    assert torch.equal(other.teacher.head.last_layer.weight, method.teacher.head.last_layer.weight)


@pytest.mark.parametrize("overrides", [
    ["sdmp.enabled=false", "data.local_crops=2"],
    ["sdmp.enabled=true", "data.local_crops=2"],
    ["sdmp.enabled=true", "sdmp.mix_global_student=true", "data.local_crops=0"],
], ids=["dino", "dino_sdmp", "dino_sdmp_2x0"])
def test_loss_decreases_on_a_fixed_batch(overrides):
    """Teacher and centre held fixed (momentum 1): the student must fit the teacher's targets."""
    _, _, views, trainer = _setup(overrides + ["optim.lr=5e-3", "method.momentum=1.0", "method.center_momentum=1.0"])
    losses = []
    for _ in range(30):
        trainer.step = 5
        losses.append(float(trainer.train_step(views)["loss"]))
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first and last < 0.95 * losses[0], losses


def test_fixed_size_backbones_are_refused_for_local_crops():
    from sdmp_fast.config import ConfigError
    cfg = load_config(None, TINY + ["model.backbone=vit_tiny_p4"])
    with pytest.raises(ConfigError, match="model.backbone = 'vit_tiny_p4' only takes 16 px inputs"):
        build_method(cfg, build_backbone(cfg))
