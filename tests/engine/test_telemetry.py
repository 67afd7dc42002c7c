"""Data-stall telemetry (engine/telemetry.py): host wait per interval, the device-gap arithmetic on its CPU twin,
ranks, the loop's lines, summary.json, the end-of-run line and TensorBoard (gpu tests: the CUDA events)."""
import itertools
import json
import sys
import time
from pathlib import Path

import pytest
import torch
from loader_doubles import Slowed
from torch.utils._python_dispatch import TorchDispatchMode

import loaders  # noqa: F401
from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine.telemetry import (
    Board,
    CudaClock,
    HostClock,
    StallMeter,
    kind,
    loader_workers,
    summarise,
    wait_phrase,
)
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.health.guard import HOST_READS
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.models import build_backbone
from sdmp_fast.pretrain import main, run
from sdmp_fast.registry import LOADERS, MissingBackend

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = ["data.batch_size=8", "data.image_size=16", "method.hidden_dim=32", "method.out_dim=16", "run.knn=false",
        "run.checkpoint_minutes=0", "optim.warmup_epochs=0"]


class ManualClock(HostClock):
    """A clock the test moves by hand: the twin's arithmetic on exact numbers."""

    def __init__(self):
        self.t = 0.0

    def mark(self) -> float:
        return self.t


def test_host_wait_of_a_slow_and_a_fast_loader():
    for pause, work, high in ((0.05, 0.0, True), (0.0, 0.05, False)):
        meter = StallMeter()
        t0 = time.perf_counter()
        for _ in meter.batches(Slowed(range(4), pause) if pause else range(4)):
            meter.step(time.sleep, work)
        fig = meter.interval(time.perf_counter() - t0)
        assert set(fig) == {"data_wait_s", "step_s", "data_wait_frac"}
        if high:
            assert fig["data_wait_s"] >= 4 * 0.05 and fig["data_wait_frac"] > 0.8
        else:
            assert fig["data_wait_frac"] < 0.1 and fig["step_s"] >= 4 * 0.05


def test_device_gaps_on_the_cpu_twin_carry_over_intervals():
    """Steps of 3 s with 1 s of input between them: idle = the gaps (the first of the run has none before it);
    the second interval's first gap is measured from the first interval's last step."""
    clock = ManualClock()
    meter = StallMeter(clock)

    def busy():
        clock.t += 3.0

    figures = []
    for _ in range(2):
        for _ in range(2):
            clock.t += 1.0  # the input: the device waits
            meter.step(busy)
        figures.append(meter.interval(8.0))
    assert figures[0]["device_idle_s"] == 1.0 and figures[0]["device_idle_frac"] == pytest.approx(1 / 7)
    assert figures[1]["device_idle_s"] == 2.0 and figures[1]["device_idle_frac"] == pytest.approx(2 / 8)
    total = meter.run_figures()
    assert total["device_idle_s"] == 3.0 and total["device_idle_frac"] == pytest.approx(3 / 15)


def test_several_ranks_log_the_mean_and_the_slowest():
    ranks = [{"seconds": 10.0, "wait": 1.0, "idle": 1.0, "busy": 9.0},
             {"seconds": 10.0, "wait": 6.0, "idle": 5.0, "busy": 5.0}]
    fig = summarise(ranks)
    assert fig["data_wait_frac"] == pytest.approx(0.35) and fig["data_wait_frac_max"] == pytest.approx(0.6)
    assert fig["data_wait_s_max"] == 6.0 and fig["device_idle_frac_max"] == pytest.approx(0.5)
    assert "_max" not in "".join(summarise(ranks[:1]))


def test_interval_gathers_every_rank(monkeypatch):
    """With two ranks the line holds the mean and the slower rank's wait (the gather is dist.all_gather_object)."""
    from sdmp_fast import dist
    other = {"seconds": 1.0, "wait": 0.9}
    monkeypatch.setattr(dist, "all_gather_object", lambda mine: [mine, other])
    meter = StallMeter()
    for _ in meter.batches(range(3)):
        pass
    fig = meter.interval(1.0)
    assert fig["data_wait_frac_max"] == pytest.approx(0.9) and fig["data_wait_s_max"] == pytest.approx(0.9)
    assert fig["data_wait_frac"] == pytest.approx((0.9 + meter.totals[0]["wait"]) / 2)
    assert meter.run_figures()["data_wait_frac_max"] == pytest.approx(0.9)


def _trainer(overrides, out: Path, loader=None, device="cpu"):
    cfg = load_config(None, TINY + overrides + [f"run.device={device}"])
    dev = torch.device(device)
    torch.manual_seed(0)
    method = build_method(cfg, build_backbone(cfg)).to(dev).to(memory_format=torch.channels_last)
    ld = LOADERS.build("synthetic", cfg, method_recipe(cfg), rank=0, world=1, device=dev)
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(cfg, resolve(cfg, ld.num_samples), method, loader(ld) if loader else ld, dev, out), ld


class Reads(TorchDispatchMode):
    """Counts the ops that read a device value on the host."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func.overloadpacket in HOST_READS
        return func(*args, **(kwargs or {}))


def instant_step(trainer):
    """A step that costs nothing (so the wait share of a slow loader does not depend on this machine's load)."""
    def step(views):
        trainer.step += 1
        return {"loss": torch.ones(())}
    return step


def test_fit_logs_little_wait_for_synthetic_data_and_a_high_one_for_a_slow_loader(tmp_path):
    """Real steps on synthetic data: near-zero wait, and the timed loader and step marks add no host read (6 steps
    logged twice = two reads per logged key). A loader sleeping 0.2 s a batch before instant steps: high wait."""
    trainer, _ = _trainer(["run.max_steps=6", "run.log_every=3"], tmp_path / "synthetic")
    t0 = time.time()
    with Reads() as counted:
        trainer.fit(progress=False)
    lines = [json.loads(x) for x in (tmp_path / "synthetic" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6] and max(x["data_wait_frac"] for x in lines) < 0.1
    assert t0 <= lines[0]["time"] <= lines[1]["time"] <= time.time()  # absolute wall clock
    logged = [k for k in trainer.last_logs if kind(k) in ("loss", "monitor")]
    assert counted.reads == 2 * len(logged) and logged
    slow, _ = _trainer(["run.max_steps=4", "run.log_every=2"], tmp_path / "slow", lambda ld: Slowed(ld, 0.2))
    slow.train_step = instant_step(slow)
    result = slow.fit(progress=False)
    lines = [json.loads(x) for x in (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()]
    assert min(x["data_wait_frac"] for x in lines) > 0.5 and all(x["data_wait_s"] >= 2 * 0.2 for x in lines)
    assert result.data_wait["data_wait_frac"] > 0.5 and result.data_wait["data_wait_s"] >= 4 * 0.2
    for x in lines:
        assert x["step_s"] + x["data_wait_s"] == pytest.approx(x["data_wait_s"] / x["data_wait_frac"], rel=1e-6)


def test_pretrain_summary_end_line_and_tensorboard(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "r"
    summary = run(["--config", SMOKE, "--loader", "synthetic", "--out", str(out), "run.max_steps=4",
                   "run.log_every=2", "run.tensorboard=true"], progress=False)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["data_wait"] == summary["data_wait"] and 0 <= saved["data_wait"]["data_wait_frac"] < 0.5
    assert f"{wait_phrase(saved['data_wait'], load_config(SMOKE, ['data.loader=synthetic']))};" in capsys.readouterr().err
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag, key in (("loss/loss", "loss"), ("speed/data_wait_frac", "data_wait_frac"), ("schedule/lr", "lr"),
                     ("speed/images_per_s", "images_per_s"), ("loss/mix", "mix"), ("monitor/lam_eff", "lam_eff")):
        assert tag in tags, tags
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(x["step"], pytest.approx(x[key], rel=1e-5)) for x in lines], tag


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an install without it raises
    with pytest.raises(MissingBackend, match=r"pip install -e '\.\[tb\]'"):
        Board(tmp_path, True)
    Board(tmp_path, False).write({"step": 1, "loss": 1.0})  # off: nothing imported, nothing written
    assert main(["--config", SMOKE, "--loader", "synthetic", "--out", str(tmp_path / "x"), "run.tensorboard=true"]) == 2
    assert "run.tensorboard = true needs the tensorboard package" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoints").exists() and not (tmp_path / "x" / "tensorboard").exists()


def test_loader_description():
    cfg = load_config(None, ["data.loader=dali", "data.dali_threads=4"])
    assert loader_workers(cfg) == "dali, 4 threads"
    assert loader_workers(load_config(None, ["data.num_workers=0"])) == "torch, in the main process"
    fig = {"data_wait_frac": 0.234, "data_wait_frac_max": 0.31, "device_idle_frac": 0.05}
    assert wait_phrase(fig, cfg) == ("waited for data 23% of the time (dali, 4 threads; slowest rank 31%), "
                                     "device idle 5% between steps")


# ----------------------------------------------------------------------------- GPU


def _gpu_fit(tmp_path, overrides, slow: float):
    trainer, _ = _trainer(overrides + ["run.log_every=10", "run.max_steps=40"], tmp_path,
                          (lambda ld: Slowed(ld, slow)) if slow else None, "cuda")
    trainer.save_checkpoint = lambda: None
    trainer.fit(progress=False)
    return [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][1:]  # after the first


@pytest.mark.gpu
def test_gpu_bound_step_waits_little_and_a_slow_loader_a_lot(tmp_path):
    bound = _gpu_fit(tmp_path / "a", ["model.backbone=vit_small", "data.batch_size=128", "data.image_size=224",
                                      "method.hidden_dim=1024", "method.out_dim=256"], 0)
    assert all(x["data_wait_frac"] < 0.05 and x["device_idle_frac"] < 0.05 for x in bound), bound
    slow = _gpu_fit(tmp_path / "b", [], 0.05)
    assert all(x["data_wait_frac"] > 0.5 and x["device_idle_frac"] > 0.5 for x in slow), slow


@pytest.mark.gpu
def test_gpu_marks_do_not_synchronise(tmp_path):
    trainer, ld = _trainer(["run.max_steps=10"], tmp_path, device="cuda")
    meter = StallMeter(CudaClock(torch.device("cuda")))
    batches = [b.views for b in itertools.islice(iter(ld), 4)]
    trainer.train_step(batches[0])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for v in batches[1:]:
            meter.step(trainer.train_step, v)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    float(trainer.step_t)  # the logging point's read
    fig = meter.interval(1.0)
    assert fig["device_idle_s"] >= 0 and 0 <= fig["device_idle_frac"] < 1
