"""The real training step on fake CUDA tensors (sdmp_fast.health.fake_cuda, the doctor's check, one run per test).

Every parameter, buffer, optimizer state, schedule table and input is a fake CUDA tensor; a CPU tensor meeting
a CUDA one, a host read and a host<->device copy inside the step each fail. Known limits, which only a GPU run
checks (`make gpu-test`): backward does not run under fake CUDA here (gradients are planted where it would put
them), nor do CUDA generators (CPU ones stand in), autocast (the step runs in float32) or fused AdamW (a
foreach AdamW with the same device lr tensors is stepped).
"""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

from sdmp_fast.health.fake_cuda import (
    CUDA,
    RUNS,
    VARIANTS,
    fake_canvas_views,
    fake_cuda,
    fake_step,
    fake_trainer,
    fake_views,
)
from sdmp_fast.health.guard import NoHostSync

pytestmark = pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="fake CUDA needs a CUDA build of torch")


@pytest.mark.parametrize("name,device_draws", RUNS, ids=[f"{n}-{'device' if d else 'host'}-draws" for n, d in RUNS])
def test_the_step_runs_on_fake_cuda_without_host_synchronisation(name, device_draws):
    assert "on cuda" in fake_step(name, device_draws)


def test_every_method_and_variant_is_run():
    assert {n for n, _ in RUNS} == set(VARIANTS) and {d for _, d in RUNS} == {False, True}
    assert {"mocov3", "dino", "resnet50-bn+sdmp", "mocov3+sdmp-extra", "dino+sdmp-mixed-global"} <= set(VARIANTS)


def test_the_canvas_loaders_augmentation_runs_on_fake_cuda_in_bf16():
    assert "bicubic views, float32 and bfloat16" in fake_canvas_views(torch.bfloat16)


def _step_with(planted):
    """One MoCo v3 + SDMP step on fake CUDA with ``planted(trainer)`` applied after the build."""
    with fake_cuda() as mode:
        trainer = fake_trainer(VARIANTS["mocov3+sdmp"])
        views = fake_views(trainer)
        planted(trainer)
        mode.answer_reads = False
        with NoHostSync():
            trainer.train_step(views)


def test_a_planted_cpu_tensor_is_caught():
    def cpu_table(trainer):  # the EMA weights left on the host
        trainer._ema_w_t = torch.ones(trainer.res.total_steps)
    with pytest.raises(FakeTensorDeviceMismatchError):
        _step_with(cpu_table)


def _wrap_forward(trainer, after):
    forward = trainer.model.forward

    def wrapped(views, rng):
        loss, logs = forward(views, rng)
        after(loss)
        return loss, logs
    trainer.model.forward = wrapped


def test_item_in_the_step_is_caught():
    with pytest.raises(AssertionError, match="_local_scalar_dense"):
        _step_with(lambda t: _wrap_forward(t, lambda loss: loss.item()))


def test_a_copy_to_the_host_in_the_step_is_caught():
    with pytest.raises(AssertionError, match="copy cuda -> cpu"):
        _step_with(lambda t: _wrap_forward(t, lambda loss: loss.detach().cpu()))


def test_a_copy_from_the_host_in_the_step_is_caught():
    with pytest.raises(AssertionError, match="copy cpu -> cuda"):
        _step_with(lambda t: _wrap_forward(t, lambda loss: torch.ones(3).to(CUDA)))
