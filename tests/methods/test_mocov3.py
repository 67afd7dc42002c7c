from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import loaders  # noqa: F401
from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.models import build_backbone
from sdmp_fast.registry import LOADERS
from sdmp_fast.streams import StepRandom

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.batch_size=16", "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=40", "optim.warmup_epochs=0"]


def _setup(overrides, config=None, tmp=Path("/tmp")):
    cfg = load_config(config, overrides)
    torch.manual_seed(0)
    method = build_method(cfg, build_backbone(cfg)).to(memory_format=torch.channels_last)
    ld = LOADERS.build("synthetic", cfg, method_recipe(cfg), rank=0, world=1, device="cpu")
    trainer = Trainer(cfg, resolve(cfg, ld.num_samples), method, ld, torch.device("cpu"), tmp)
    return cfg, method, ld, trainer


def test_baseline_loss_is_symmetric_infonce_and_only_the_student_learns():
    cfg, method, ld, _ = _setup(TINY + ["sdmp.enabled=false"])
    views = next(iter(ld)).views
    loss, logs = method(views, StepRandom.create(0, 0, torch.device("cpu")))
    T = cfg.method.temperature
    with torch.no_grad():
        k1, k2 = [F.normalize(method.teacher(v), dim=1) for v in views]
    q1, q2 = [F.normalize(method.student(v), dim=1) for v in views]
    labels = torch.arange(views[0].shape[0])
    ref = 2 * T * (F.cross_entropy(q1 @ k2.T / T, labels) + F.cross_entropy(q2 @ k1.T / T, labels))
    assert torch.allclose(loss, ref, atol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    trainable = [p for p in method.student.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert method.student.backbone.patch_embed.proj.weight.grad is None  # frozen random patch projection


@pytest.mark.parametrize("overrides", [
    ["sdmp.enabled=false"],
    ["sdmp.enabled=true"],
    ["sdmp.enabled=true", "sdmp.variant=extra"],
])
def test_loss_decreases_on_a_fixed_batch(overrides):
    _, method, ld, trainer = _setup(TINY + overrides + ["optim.lr=2e-3", "data.image_size=16"])
    views = next(iter(ld)).views
    losses = []
    for _ in range(30):
        trainer.step = 5  # constant lr past the warm-up, fixed momentum
        losses.append(float(trainer.train_step(views)["loss"]))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses


def test_ema_runs_before_the_forward_with_the_scheduled_momentum():
    _, method, ld, trainer = _setup(TINY + ["sdmp.enabled=false"])
    views = next(iter(ld)).views
    trainer.train_step(views)  # moves the student away from the teacher
    t0 = [p.clone() for p in trainer.teacher_params]
    s0 = [p.clone() for p in trainer.student_params]
    m = float(trainer.momentum[trainer.step])
    trainer.train_step(views)
    for t, a, b in zip(trainer.teacher_params, t0, s0):
        assert torch.allclose(t, m * a + (1 - m) * b, atol=1e-6)


def test_resnet50_recipe_builds_and_steps():
    cfg, method, ld, trainer = _setup(TINY[:-2] + ["data.image_size=32", "data.batch_size=8", "run.max_steps=4"],
                                      config=ROOT / "configs" / "mocov3_sdmp_r50.yaml")
    assert cfg.optim.name == "lars" and cfg.method.temperature == 1.0
    assert type(method.student.predictor[-1]).__name__ == "Linear"  # no last BN in the ResNet predictor
    assert len(method.student.projector) == 5  # 2 layers: Linear BN ReLU Linear BN
    before = [p.clone() for p in method.student.parameters()]
    trainer.step = 2
    logs = trainer.train_step(next(iter(ld)).views)
    assert torch.isfinite(logs["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, method.student.parameters()))
