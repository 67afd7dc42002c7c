"""The real training step on fake CUDA tensors: device placement and host synchronisation checked without a GPU.

``torch._subclasses.fake_tensor.FakeTensorMode`` gives tensors with a device, shape and dtype and no data; on a
CUDA build of torch, ``device="cuda"`` works in it without a GPU. :func:`fake_cuda` runs host (CPU) work for
real, so schedule tables, host lists and initialisations are real, while every CUDA tensor is fake. The
trainer is built for ``cuda`` inside it and :func:`fake_step` runs ``Trainer.train_step`` (``step_body``) under
:class:`~sdmp_fast.health.guard.NoHostSync`: a CPU tensor that meets a CUDA one raises
``FakeTensorDeviceMismatchError``, a host read or a host<->device copy raises AssertionError.

Known limits (what only a GPU shows): backward does not run under fake CUDA (its engine needs a device), nor do
CUDA generators (CPU generators stand in: fake ops accept them), autocast (disabled without a GPU: the step runs
in float32) or fused AdamW (a foreach AdamW with the same lr tensors, capturable). So the checked step is the
forward, the losses, the EMA, the schedules, clipping, the decoupled weight decay and the optimizer step on
gradients planted where backward would put them. Host reads while the trainer is *built* (AdamW's check
``0 <= lr``) get a placeholder answer; inside the step they are errors.
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.health.guard import NoHostSync
from sdmp_fast.methods import build_method
from sdmp_fast.mixing import build_mixer
from sdmp_fast.models import build_backbone

CUDA = torch.device("cuda", 0)
SMALL = ["data.batch_size=8", "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=40",
         "optim.warmup_epochs=0.0005", "optim.clip_grad=1.0", "run.precision=bf16", "run.device=cuda"]
DINO = ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.local_size=16", "data.local_crops=2",
        "method.dino_out_dim=64", "method.dino_hidden_dim=64", "method.dino_bottleneck_dim=32",
        "optim.clip_mode=per_param", "optim.weight_decay=0.04", "optim.weight_decay_end=0.4",
        "method.freeze_last_layer=0.0001", "method.warmup_teacher_temp_epochs=0.001"]
SDMP = ["sdmp.enabled=true"]
# name -> overrides
VARIANTS: dict[str, list[str]] = {
    "mocov3": [],
    "mocov3+sdmp": SDMP,
    "mocov3+sdmp-extra": SDMP + ["sdmp.variant=extra"],
    "dino": DINO,
    "dino+sdmp": DINO + SDMP,
    "dino+sdmp-mixed-global": DINO + SDMP + ["sdmp.mix_global_student=true"],
    "resnet50-bn+sdmp": SDMP + ["model.backbone=resnet50", "optim.name=lars", "method.hidden_dim=128"],
}
# (variant, device-drawn mixing ops): each method and variant once with host draws; the device draws (what
# run.cuda_graph captures) for a MoCo v3 and a DINO variant (the DeviceMixer is the same code in both)
RUNS = [(name, False) for name in VARIANTS] + [("mocov3+sdmp", True), ("dino+sdmp-mixed-global", True)]


# float64 host tables, kept for the logs and LARS/SGD's host lr (the step reads their device copies)
HOST_TABLES = {"trainer.lr", "trainer.momentum", "trainer.wd", "method.teacher_temp_table"}


class _HostRealCudaFake(TorchDispatchMode):
    """Inside FakeTensorMode: an op that touches no fake tensor and no CUDA device runs for real on the host."""

    def __init__(self):
        super().__init__()
        self.answer_reads = True  # while building: host reads of fake values get a placeholder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        fake = any(isinstance(a, FakeTensor) for a in flat)
        if fake and self.answer_reads and func is torch.ops.aten._local_scalar_dense.default:
            x = args[0]
            return True if x.dtype == torch.bool else (0.0 if x.is_floating_point() else 0)
        if not fake and not any(_names_cuda(a) for a in flat):
            with _disable_current_modes():
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def _names_cuda(a) -> bool:
    return (isinstance(a, torch.device) and a.type == "cuda") or (isinstance(a, str) and a.startswith("cuda"))


_Generator = torch.Generator


def _host_generator(device=None):
    """torch.Generator(device=...) while faking: a CPU generator (a CUDA one would initialise CUDA)."""
    return _Generator()


@contextlib.contextmanager
def fake_cuda():
    """Fake CUDA tensors, real host work; yields the mode whose ``answer_reads`` the caller turns off to step."""
    inner = _HostRealCudaFake()
    torch.Generator = _host_generator
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*CUDA is not available.*")  # autocast, GradScaler
            with FakeTensorMode(allow_non_fake_inputs=True), inner:
                yield inner
    finally:
        torch.Generator = _Generator


class _PlantedBackward:
    """Stands in for ``GradScaler`` (disabled for bf16 and fp32): ``scale(loss).backward()`` plants a gradient
    on every trainable student parameter, as backward would; the rest calls the optimizer as the scaler does."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        self.loss = None

    def scale(self, loss):
        self.loss = loss
        return self

    def backward(self):
        if not self.loss.requires_grad:
            raise AssertionError("the loss does not depend on the student")
        for p in self.params:
            p.grad = torch.randn_like(p)

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        pass


def fake_trainer(overrides: list[str], device_draws: bool = False) -> Trainer:
    """A Trainer built for ``cuda`` inside :func:`fake_cuda` (call it there), ready to step."""
    cfg = load_config(None, SMALL + overrides)
    method = build_method(cfg, build_backbone(cfg)).to(CUDA, memory_format=torch.channels_last)
    if device_draws:  # the Mixer run.cuda_graph builds, for the eager step
        method.mixer = build_mixer(method.mixer.ops, method.mixer.alpha, device_draws=True)
    trainer = Trainer(cfg, resolve(cfg, 51200), method, None, CUDA, tempfile.gettempdir())
    groups = trainer.optimizer.param_groups
    if cfg.optim.name == "adamw":
        if not all(g.get("fused") and g.get("capturable") for g in groups):
            raise AssertionError("AdamW on CUDA must be fused and capturable")
        for g in groups:  # fused AdamW does not run on fake tensors: the foreach one, same lr tensors
            g["fused"], g["foreach"] = False, True
    trainer.scaler = _PlantedBackward(method.student_parameters())
    return trainer


def fake_views(trainer: Trainer, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """One batch of the recipe's views as the loaders deliver them: channels-last on the device."""
    from sdmp_fast.methods.base import method_recipe
    b = trainer.cfg.data.batch_size
    return [torch.randn(b, 3, s, s, device=CUDA, dtype=dtype).contiguous(memory_format=torch.channels_last)
            for s in method_recipe(trainer.cfg).sizes]


def off_device(trainer: Trainer) -> list[str]:
    """Every tensor of the trainer's state that is not on the CUDA device: parameters, buffers, optimizer state
    and lr tensors, the trainer's and the method's tensor attributes (schedule tables, step counter)."""
    found = []

    def look(where: str, t) -> None:
        if isinstance(t, torch.Tensor) and t.device.type != "cuda":
            found.append(f"{where} on {t.device}")
    for n, t in [*trainer.method.named_parameters(), *trainer.method.named_buffers()]:
        look(n, t)
    for owner, obj in (("trainer", trainer), ("method", trainer.method)):
        for k, v in vars(obj).items():
            if f"{owner}.{k}" not in HOST_TABLES:
                look(f"{owner}.{k}", v)
    for i, g in enumerate(trainer.optimizer.param_groups):
        look(f"param group {i} lr", g["lr"])
    for st in trainer.optimizer.state.values():
        for k, v in st.items():
            look(f"optimizer state {k}", v)
    return found


def fake_step(name: str, device_draws: bool = False, steps: int = 1) -> str:
    """``steps`` training steps of VARIANTS[name] on fake CUDA under NoHostSync; raises on a CPU tensor, a host
    read or a host<->device copy in the step, or a tensor of the state left off the device."""
    with fake_cuda() as mode:
        trainer = fake_trainer(VARIANTS[name], device_draws)
        views = fake_views(trainer)
        mode.answer_reads = False
        with NoHostSync():
            logs = [trainer.train_step(views) for _ in range(steps)]
        bad = off_device(trainer) + [f"log {k} on {v.device}" for k, v in logs[-1].items() if v.device.type != "cuda"]
        if bad:
            raise AssertionError(f"{name}: not on the GPU after the step: {', '.join(bad[:5])}")
        if not trainer.optimizer.state:
            raise AssertionError(f"{name}: the optimizer did not step")
        return f"{len(logs[-1])} logs, {sum(1 for _ in trainer.method.parameters())} parameters on cuda"


def fake_canvas_views(out_dtype: torch.dtype = torch.bfloat16) -> str:
    """The nvjpeg/ffcv loaders' batched augmentation (torch implementation) on a fake CUDA canvas: the views of
    a DINO recipe (bicubic crops, DINO's filter) through ``CanvasLoader.canvas_batch`` and through
    ``apply_views`` with ``out_dtype``."""
    from loaders.base import CanvasLoader
    from sdmp_fast.augment import apply_views, sample_view_params
    from sdmp_fast.augment.recipes import dino_recipe
    recipe = dino_recipe(32, 16, 2, (0.4, 1.0), (0.05, 0.4), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                         interpolation="bicubic")
    with fake_cuda() as mode:
        loader = CanvasLoader(recipe, CUDA, "torch", num_samples=64, global_batch=8, rank=0, world=1, seed=0,
                              source="fake")
        canvas = torch.randint(0, 256, (8, 3, 40, 48), dtype=torch.uint8, device=CUDA)
        sizes = torch.full((8, 2), 40, dtype=torch.int64, device=CUDA)
        ids = torch.arange(8, device=CUDA)
        mode.answer_reads = False
        with NoHostSync():
            batch = loader.canvas_batch(0, canvas, sizes, ids, ids)
            params = sample_view_params(recipe, sizes, torch.Generator(device=CUDA))
            low = apply_views(canvas, sizes, params, recipe, out_dtype)
        for v, w, s in zip(batch.views, low, recipe.sizes):
            if v.device.type != "cuda" or w.device.type != "cuda" or w.dtype != out_dtype or v.shape[-1] != s:
                raise AssertionError(f"view {s}px: {v.device}/{v.dtype}, {w.device}/{w.dtype}")
            if not w.is_contiguous(memory_format=torch.channels_last):
                raise AssertionError(f"view {s}px is not channels-last")
    return f"{len(recipe.views)} bicubic views, float32 and {str(out_dtype).split('.')[-1]}"


def fake_cuda_steps() -> str:
    """The doctor's check: every run of RUNS, then the canvas augmentation."""
    for name, draws in RUNS:
        fake_step(name, draws)
    fake_canvas_views()
    return (f"{len(RUNS)} steps ({len(VARIANTS)} methods/variants, host and device mixing draws) and the canvas "
            "augmentation on fake CUDA: no CPU tensor, host read or copy; not run without a GPU: backward, "
            "autocast, fused AdamW, CUDA generators")
