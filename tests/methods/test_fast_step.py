"""The fused pass (run.fused) equals one forward per view; device-drawn ops and view swaps (run.cuda_graph's step)."""
import itertools
from pathlib import Path

import pytest
import torch

import loaders  # noqa: F401
from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.mixing import build_mixer
from sdmp_fast.models import build_backbone
from sdmp_fast.registry import LOADERS
from sdmp_fast.streams import StepRandom

CPU = torch.device("cpu")
TINY = ["data.batch_size=8", "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=40", "optim.warmup_epochs=0"]
DINO = ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.batch_size=8", "data.image_size=16",
        "data.local_size=8", "data.local_crops=2", "method.dino_out_dim=64", "method.dino_hidden_dim=64",
        "method.dino_bottleneck_dim=32", "run.max_steps=40", "optim.warmup_epochs=0"]


def _trainer(overrides, tmp=Path("/tmp")):
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    method = build_method(cfg, build_backbone(cfg)).to(memory_format=torch.channels_last)
    ld = LOADERS.build("synthetic", cfg, method_recipe(cfg), rank=0, world=1, device="cpu")
    return Trainer(cfg, resolve(cfg, ld.num_samples), method, ld, CPU, tmp), ld


def _close(a: torch.Tensor, b: torch.Tensor, what: str, rel: float = 1e-4) -> None:
    """Equal up to float32 summation order: errors relative to the tensor's largest entry."""
    scale = max(float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max())
    assert err <= rel * scale + 1e-7, (what, err, scale)


@pytest.mark.parametrize("overrides", [
    ["sdmp.enabled=false"],
    ["sdmp.enabled=true"],
    ["sdmp.enabled=true", "sdmp.variant=extra"],
    ["sdmp.enabled=true", "model.backbone=resnet50", "data.image_size=32", "method.pred_last_bn=false",
     "method.proj_layers=2"],
], ids=["mocov3", "mocov3+sdmp", "mocov3+sdmp-extra", "resnet50-bn"])
def test_fused_pass_equals_one_forward_per_view_after_three_steps(overrides):
    """Losses, gradients, parameter updates and BatchNorm buffers after 3 steps, fused vs per view.

    SGD (lr 0.05 x batch / 256), not AdamW: Adam divides by the gradient's running scale, so gradients that are
    zero in exact arithmetic (a key bias under softmax) turn float32 noise into full-size updates of either sign,
    while SGD's updates stay proportional to the gradient differences being checked.
    """
    runs = {}
    for fused in (True, False):
        trainer, ld = _trainer(TINY + overrides + ["optim.name=sgd", "optim.lr=0.05", "optim.weight_decay=0",
                                                   f"run.fused={str(fused).lower()}"])
        assert trainer.method.fused is fused
        start = [p.detach().clone() for p in trainer.method.parameters()]
        losses = [trainer.train_step(b.views) for b in itertools.islice(iter(ld), 3)]
        runs[fused] = (trainer, losses, start)
    (tf, lf, s0), (tu, lu, _) = runs[True], runs[False]
    for step, (a, b) in enumerate(zip(lf, lu)):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], f"step {step} {k}", rel=1e-5)
    named = list(tf.method.named_parameters())
    grad_scale = max(float(q.grad.abs().max()) for q in tu.method.parameters() if q.grad is not None)
    moved = max(float((q.detach() - p0).abs().max()) for q, p0 in zip(tu.method.parameters(), s0))
    assert moved > 1e-4
    for (name, p), q, p0 in zip(named, tu.method.parameters(), s0):
        err = float((p.detach() - q.detach()).abs().max())
        assert err <= 1e-4 * moved, (name, err, moved)           # parameter updates
        if q.grad is not None:
            err = float((p.grad - q.grad).abs().max())
            assert err <= 1e-5 * grad_scale + 1e-4 * float(q.grad.abs().max()), (f"grad {name}", err, grad_scale)
    buffers = dict(tu.method.named_buffers())
    assert [n for n in buffers if n.endswith("running_mean")], "the projector's BatchNorm buffers are compared"
    for name, b in tf.method.named_buffers():
        if b.is_floating_point():
            _close(b, buffers[name], name)
        else:
            assert torch.equal(b, buffers[name]), name  # num_batches_tracked: one count per view


@pytest.mark.parametrize("overrides", [TINY + ["sdmp.enabled=true"], DINO + ["sdmp.enabled=true"]], ids=["mocov3", "dino"])
def test_device_draws_vary_between_steps_and_agree_with_the_host_path(overrides):
    trainer, ld = _trainer(overrides)
    method = trainer.method
    views = next(iter(ld)).views
    method.mixer = build_mixer(method.mixer.ops, method.mixer.alpha, device_draws=True)  # run.cuda_graph's Mixer
    rng = StepRandom.create(0, 0, CPU)
    draws = [method.sdmp_views(views, rng) for _ in range(6)]
    lam = "lam_q" if hasattr(draws[0], "lam_q") else "lam_global"
    assert all(not torch.equal(getattr(draws[0], lam), getattr(d, lam)) for d in draws[1:])
    mixed = "b_mix" if hasattr(draws[0], "b_mix") else "global_mix"
    assert len({float(getattr(d, mixed).sum()) for d in draws}) == 6
    # every mixed view is a mix of its own image and the partner's: the device path's lam_eff obey the op rules
    for d in draws:
        eff = getattr(d, lam)
        assert bool(((eff >= 0) & (eff <= 1)).all())
        assert torch.is_tensor(d.op) and d.op.dim() == 0
    loss, logs = method(views, rng)
    assert torch.isfinite(loss) and "lam_eff" in logs


def test_dino_fused_equals_one_forward_per_view():
    """DINO's ViT and head have no BatchNorm: one forward per view gives the same loss and gradients."""
    out = {}
    for fused in (True, False):
        trainer, ld = _trainer(DINO + ["sdmp.enabled=true", f"run.fused={str(fused).lower()}"])
        views = next(iter(ld)).views
        loss, _ = trainer.method(views, StepRandom.create(0, 0, CPU))
        loss.backward()
        out[fused] = (loss.detach(), [p.grad.clone() for p in trainer.method.student.parameters() if p.grad is not None])
    _close(out[True][0], out[False][0], "loss", rel=1e-6)
    scale = max(float(g.abs().max()) for g in out[False][1])
    for a, b in zip(out[True][1], out[False][1]):
        assert float((a - b).abs().max()) <= 1e-5 * scale
