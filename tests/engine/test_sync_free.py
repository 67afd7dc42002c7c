"""The training step without host synchronisation, torch.compile, and CUDA-graph capture (gpu tests).

CPU: real steps of both methods (with SDMP, clipping, DINO's weight-decay schedule, frozen last layer and
teacher-temperature warm-up) run under the project's dispatch guard (``sdmp_fast.health.guard.NoHostSync``: host
reads, boolean indexing, host<->device copies; the same steps on fake CUDA tensors: test_fake_cuda.py); a lint
rejects host reads in the step's modules. GPU (``gpu`` marker, ``make gpu-check``): the
same steps under ``torch.cuda.set_sync_debug_mode("error")``, and the captured step against the eager one.
"""
import ast
import itertools
import os
from pathlib import Path

import pytest
import torch

import loaders  # noqa: F401
from sdmp_fast.config import ConfigError, load_config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.health.guard import NoHostSync
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.mixing import build_mixer
from sdmp_fast.models import build_backbone
from sdmp_fast.registry import LOADERS

ROOT = Path(__file__).resolve().parents[2]
MOCO = ["data.batch_size=8", "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=40", "optim.warmup_epochs=0.0005",
        "sdmp.enabled=true", "optim.clip_grad=1.0"]
# 51200 synthetic samples / 8 = 6400 steps per epoch: the last layer is frozen for 3 steps, the teacher
# temperature ramps over 20
DINO = ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.batch_size=8", "data.image_size=16",
        "data.local_size=8", "data.local_crops=2", "method.dino_out_dim=64", "method.dino_hidden_dim=64",
        "method.dino_bottleneck_dim=32", "run.max_steps=40", "optim.warmup_epochs=0", "sdmp.enabled=true",
        "optim.clip_grad=3.0", "optim.clip_mode=per_param", "optim.weight_decay=0.04", "optim.weight_decay_end=0.4",
        f"method.freeze_last_layer={3 / 6400}", f"method.warmup_teacher_temp_epochs={20 / 6400}"]


def _draw_on_the_device(method) -> None:
    """The Mixer ``run.cuda_graph`` builds, for a trainer that steps eagerly (the comparison arm, CPU tests)."""
    method.mixer = build_mixer(method.mixer.ops, method.mixer.alpha, device_draws=True)


def _trainer(overrides, device="cpu"):
    cfg = load_config(None, overrides + [f"run.device={device}"])
    dev = torch.device(device)
    torch.manual_seed(0)
    method = build_method(cfg, build_backbone(cfg)).to(dev).to(memory_format=torch.channels_last)
    ld = LOADERS.build("synthetic", cfg, method_recipe(cfg), rank=0, world=1, device=dev)
    return Trainer(cfg, resolve(cfg, ld.num_samples), method, ld, dev, Path("/tmp")), ld


def test_the_guard_catches_a_host_read():
    with pytest.raises(AssertionError, match="_local_scalar_dense"), NoHostSync():
        float(torch.ones(2).sum())
    with pytest.raises(AssertionError, match="boolean indexing"), NoHostSync():
        torch.arange(3.0)[torch.tensor([True, False, True])]
    torch.ones(2).to("cpu").clone()  # a copy within the host is fine


@pytest.mark.parametrize("overrides", [MOCO, MOCO + ["sdmp.variant=extra"], DINO, DINO + ["sdmp.mix_global_student=true"]],
                         ids=["mocov3+sdmp", "extra", "dino+sdmp", "dino-mixed-global"])
@pytest.mark.parametrize("device_draws", [False, True], ids=["host-draws", "device-draws"])
def test_steps_run_without_host_synchronisation(overrides, device_draws):
    trainer, ld = _trainer(overrides)
    if device_draws:
        _draw_on_the_device(trainer.method)
    batches = [b.views for b in itertools.islice(iter(ld), 4)]
    with NoHostSync():
        logs = [trainer.train_step(v) for v in batches]
    assert trainer.step == 4 and int(trainer.step_t) == 4
    assert all(bool(torch.isfinite(v).all()) for entry in logs for v in entry.values())
    # the schedules were read on the device at the device step: lr of the last step in the optimizer ...
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and float(lr) == pytest.approx(float(trainer.lr[3]), rel=1e-6)
    if trainer.cfg.method.name == "dino":  # ... and the teacher temperature in the method
        assert float(trainer.method.teacher_temp_t) == pytest.approx(float(trainer.method.teacher_temp_table[3]), rel=1e-6)
        assert trainer.method.phase(2) == 1 and trainer.method.phase(3) == 0


def test_dino_frozen_last_layer_gets_neither_update_nor_decay():
    trainer, ld = _trainer(DINO)
    last = trainer.method.last_layer_parameters()
    before = [p.detach().clone() for p in last]
    with NoHostSync():
        for b in itertools.islice(iter(ld), 3):  # the 3 frozen steps
            trainer.train_step(b.views)
    assert all(torch.equal(a, p) for a, p in zip(before, last))
    trainer.train_step(next(iter(ld)).views)
    assert any(not torch.equal(a, p) for a, p in zip(before, last))


# the step's modules, and the functions in them that run once or outside the step (allowed host reads)
STEP_MODULES = {
    "sdmp_fast/methods/base.py": set(), "sdmp_fast/methods/mocov3.py": {"view_grid"},
    "sdmp_fast/methods/dino.py": {"view_grid", "prepare", "__init__"},
    "sdmp_fast/losses/sdmp.py": set(), "sdmp_fast/losses/dino.py": set(), "sdmp_fast/mixing/params.py": set(),
    "sdmp_fast/mixing/blend.py": set(), "sdmp_fast/mixing/mixer.py": set(), "sdmp_fast/schedules.py": set(), "sdmp_fast/streams.py": {"HostStream", "rank_reseed", "pipeline_seed", "seed_step_streams"},
    "sdmp_fast/engine/ema.py": set(), "sdmp_fast/engine/optim.py": set(), "sdmp_fast/engine/graph.py": set(),
    "sdmp_fast/models/norm.py": set(), "sdmp_fast/models/heads.py": set(),
}
STEP_FUNCTIONS = {"sdmp_fast/engine/trainer.py": {"train_step", "step_body", "_decoupled_decay"}}
HOST_READS = {"cpu", "tolist", "numpy", "item"}


def _host_reads(path: str, skip: set[str] | None = None, only: set[str] | None = None) -> list[str]:
    tree = ast.parse((ROOT / path).read_text())
    found = []

    def visit(node, inside: str | None):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if skip and node.name in skip:
                return
            inside = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and inside is None else inside
            if only is not None and isinstance(node, ast.FunctionDef) and node.name in only:
                inside = node.name
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in HOST_READS
                and (only is None or inside in only)):
            found.append(f"{path}:{node.lineno} .{node.func.attr}() in {inside}")
        for child in ast.iter_child_nodes(node):
            visit(child, inside)
    visit(tree, None)
    return found


def test_lint_no_host_reads_in_the_step_modules():
    found = [r for path, skip in STEP_MODULES.items() for r in _host_reads(path, skip=skip)]
    found += [r for path, only in STEP_FUNCTIONS.items() for r in _host_reads(path, only=only)]
    assert not found, "host reads in the training step:\n" + "\n".join(found)
    # the lint sees what it is meant to: a function of a step module that reads the host is reported
    assert _host_reads("sdmp_fast/methods/mocov3.py"), "view_grid's .cpu().tolist() must be found when not skipped"


def test_compile_runs_the_same_steps():
    """run.compile: the backbones compiled in place (state-dict names kept). The test uses the aot_eager
    backend (inductor needs a C++ toolchain and minutes on this 2-core machine); `make gpu-check` times inductor."""
    old = os.environ.get("SDMP_COMPILE_BACKEND")
    os.environ["SDMP_COMPILE_BACKEND"] = "aot_eager"
    try:
        compiled, ld = _trainer(MOCO + ["run.compile=true", "optim.clip_grad=0"])
    finally:
        os.environ.pop("SDMP_COMPILE_BACKEND") if old is None else os.environ.__setitem__("SDMP_COMPILE_BACKEND", old)
    eager, _ = _trainer(MOCO + ["optim.clip_grad=0"])
    assert set(compiled.method.state_dict()) == set(eager.method.state_dict())
    for b in itertools.islice(iter(ld), 2):
        a, e = compiled.train_step(b.views), eager.train_step(b.views)
        assert torch.allclose(a["loss"], e["loss"], rtol=1e-4, atol=1e-5)


def test_cuda_graph_and_compile_are_checked():
    with pytest.raises(ConfigError, match="alternatives"):
        load_config(None, ["run.cuda_graph=true", "run.compile=true"])
    with pytest.raises(ConfigError, match="fp16"):
        load_config(None, ["run.cuda_graph=true", "run.precision=fp16"])
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        load_config(None, ["run.cuda_graph=true", "run.device=cpu"])
    with pytest.raises(ConfigError, match="optim.name = adamw"):
        load_config(None, ["run.cuda_graph=true", "optim.name=lars"])
    with pytest.raises(ConfigError, match="sdmp.impl=torch"):
        load_config(None, ["run.cuda_graph=true", "sdmp.impl=triton"])
    cfg = load_config(None, MOCO + ["run.cuda_graph=true"])  # device auto: refused by the trainer on a CPU
    method = build_method(cfg, build_backbone(cfg))
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        Trainer(cfg, resolve(cfg, 1000), method, None, torch.device("cpu"), Path("/tmp"))


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("overrides", [MOCO, DINO, DINO + ["sdmp.mix_global_student=true"]],
                         ids=["mocov3+sdmp", "dino+sdmp", "dino+sdmp-mixed-global"])
def test_gpu_steps_do_not_synchronise(overrides):
    trainer, ld = _trainer(overrides, "cuda")
    batches = [b.views for b in itertools.islice(iter(ld), 4)]
    trainer.train_step(batches[0])  # lazy initialisation (optimizer state) may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for v in batches[1:]:
            trainer.train_step(v)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.parametrize("overrides", [MOCO, DINO, DINO + ["sdmp.mix_global_student=true"]],
                         ids=["mocov3+sdmp", "dino+sdmp", "dino+sdmp-mixed-global"])
def test_gpu_graph_replays_equal_the_eager_step(overrides):
    """fp32 so that the comparison is tight; the eager arm draws on the device as the graph does. DINO's last
    layer is frozen for 5 steps: 3 eager warm-up steps and a graph for that phase, then 3 eager and a second graph."""
    dino = overrides[0] == "method.name=dino"
    common = overrides + ["run.precision=fp32"] + ([f"method.freeze_last_layer={5 / 6400}"] if dino else [])
    graph, ld = _trainer(common + ["run.cuda_graph=true"], "cuda")
    eager, _ = _trainer(common, "cuda")
    _draw_on_the_device(eager.method)
    batches = [b.views for b in itertools.islice(iter(ld), 11)]
    lams, lrs = [], []
    for v in batches:
        g, e = graph.train_step(v), eager.train_step(v)
        assert torch.allclose(g["loss"], e["loss"], rtol=1e-4, atol=1e-5), (graph.step, g["loss"], e["loss"])
        lams.append(float(g["lam_eff"]))
        lrs.append(float(graph.optimizer.param_groups[0]["lr"]))
    runner = graph.graph
    assert runner.captures == (2 if dino else 1) and runner.replays >= 3
    assert len(set(lams[-3:])) == 3, "replays must draw different lambdas and boxes"
    assert lrs[-1] != lrs[-2] and lrs[-1] == pytest.approx(float(graph.lr[graph.step - 1]), rel=1e-6)
    for (n, p), q in zip(graph.method.named_parameters(), eager.method.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), n


@pytest.mark.gpu
def test_gpu_graph_refuses_a_changed_shape():
    trainer, ld = _trainer(MOCO + ["run.cuda_graph=true"], "cuda")
    views = next(iter(ld)).views
    for _ in range(5):
        trainer.train_step(views)
    with pytest.raises(ValueError, match="changed shape"):
        trainer.train_step([v[:4] for v in views])


@pytest.mark.parametrize("overrides", [MOCO, DINO], ids=["mocov3+sdmp", "dino+sdmp"])
def test_graph_step_bookkeeping_on_cpu(overrides):
    """GraphStep with the emulated backend (replays re-run what was captured, with the capture's host step)
    equals the eager device-draw step exactly; DINO re-captures when its frozen phase ends."""
    from graphs import EmulatedGraphs

    from sdmp_fast.engine.graph import GraphStep
    graphed, ld = _trainer(overrides)
    _draw_on_the_device(graphed.method)
    graphed.graph = GraphStep(graphed, warmup=2, backend=EmulatedGraphs())
    eager, _ = _trainer(overrides)
    _draw_on_the_device(eager.method)
    batches = [b.views for b in itertools.islice(iter(ld), 6)]
    with NoHostSync():
        for v in batches:
            g, e = graphed.train_step(v), eager.train_step(v)
            assert torch.equal(g["loss"], e["loss"]), graphed.step
    runner = graphed.graph
    dino = graphed.cfg.method.name == "dino"
    # MoCo: 2 eager steps, then capture and 4 replays; DINO: frozen phase (steps 0-2: 2 eager + 1 replay),
    # then 2 eager + a new capture and 1 replay
    assert (runner.captures, runner.replays) == ((2, 2) if dino else (1, 4))
    assert graphed.step == eager.step == 6 and int(graphed.step_t) == 6
    for (n, p), q in zip(graphed.method.named_parameters(), eager.method.parameters()):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="changed shape"):
        graphed.train_step([v[:4] for v in batches[0]])
