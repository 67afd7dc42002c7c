"""Parity cases: each Triton kernel against its torch reference on the same random draw.

Every case is a function ``case(device) -> str`` (a short summary) that raises AssertionError on a mismatch.
The references always run on the CPU (the CUDA torch augmentation resamples in float16, which is less exact
than both). Importing this module imports no triton: the kernels are imported inside the cases, so
``python tests/kernels/kernel_parity.py`` can run them all in one process started with ``TRITON_INTERPRET=1``
(the interpreter must be chosen before triton decorates the kernels), and prints one JSON object
{case: {"ok": bool, "detail": str, "seconds": float}}.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared image helpers

from images import canvas_of, edges_image, texture  # noqa: E402

from sdmp_fast import augment as aug  # noqa: E402
from sdmp_fast import mixing  # noqa: E402
from sdmp_fast.augment.recipes import Recipe, ViewSpec, dino_recipe, mocov3_recipe  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ID_MEAN, ID_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
F32_ATOL = 5e-5  # normalised views; the measured interpreter gap is ~4e-6 (float32 summation order)

CASES: dict[str, Callable[[str], str]] = {}


def case(name: str):
    def deco(fn):
        CASES[name] = fn
        return fn
    return deco


# ----------------------------------------------------------------------------------------------- comparison

def bf16_ulp(v: torch.Tensor) -> torch.Tensor:
    """Spacing of bfloat16 numbers at |v| (8 significant bits)."""
    _, e = torch.frexp(v.abs().float())
    return torch.ldexp(torch.ones_like(v, dtype=torch.float32), e - 8)


def assert_close(out: torch.Tensor, ref: torch.Tensor, what: str, atol: float = 1e-6, rtol: float = 1e-6,
                 skip: torch.Tensor | None = None) -> float:
    """float32: |out - ref| <= atol + rtol |ref|; bf16: within one bf16 ulp. ``skip`` masks elements out."""
    assert out.shape == ref.shape and out.dtype == ref.dtype, (what, out.shape, ref.shape, out.dtype, ref.dtype)
    o, r = out.detach().float().cpu(), ref.detach().float().cpu()
    gap = (o - r).abs()
    if out.dtype == torch.float32:
        allowed = atol + rtol * r.abs()
    else:
        allowed = bf16_ulp(torch.maximum(o.abs(), r.abs()))
    bad = gap > allowed
    if skip is not None:
        bad &= ~skip.cpu()
    assert not bool(bad.any()), (f"{what}: {int(bad.sum())} of {bad.numel()} values differ, max gap "
                                 f"{float(gap[bad].max()):.3g} (first at {tuple(bad.nonzero()[0].tolist())})")
    return float(gap.max()) if gap.numel() else 0.0


# ----------------------------------------------------------------------------------------------- mixing

def _batch(shape, dtype, fmt, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=FORMATS[fmt]).to(device)


def _params(x: torch.Tensor, op: str, lam=None, seed=0) -> mixing.MixParams:
    B, _, H, W = x.shape
    g = torch.Generator().manual_seed(seed)
    if lam is None:
        lam = torch.rand(B, generator=g)
    return mixing.sample_mix_params(lam, op, H, W, generator=g)


def _to(p: mixing.MixParams, device) -> mixing.MixParams:
    return dataclasses.replace(p, **{f.name: getattr(p, f.name).to(device) for f in dataclasses.fields(p)
                                     if isinstance(getattr(p, f.name), torch.Tensor)})


def check_mix(x: torch.Tensor, params: mixing.MixParams, device: str, out_dtype=None, what="") -> float:
    """Kernel on ``device`` vs mixing.apply_mix on the CPU; also the contract (layout, dtype, lam_eff, x kept)."""
    from sdmp_fast.kernels.mixing import apply_mix
    xd = x.to(device)
    before = xd.clone()
    out, lam_eff = apply_mix(xd, _to(params, device), out_dtype=out_dtype)
    dst = out_dtype or x.dtype
    # the kernel blends in float32 and rounds once to dst: so does the reference on float32 input for a
    # float32 output, and on x itself otherwise (it rounds to x's dtype)
    ref, ref_lam = mixing.apply_mix(x.cpu().float() if dst == torch.float32 else x.cpu(), params)
    ref = ref.to(dst)
    assert torch.equal(xd, before), f"{what}: the input was modified"
    assert out.device.type == torch.device(device).type and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(lam_eff.cpu(), ref_lam) and lam_eff.dtype == torch.float32
    exact = params.op == "cutmix" and (out_dtype or x.dtype) == x.dtype  # a copy: bit for bit
    return assert_close(out, ref, what, atol=0.0 if exact else 1e-6, rtol=0.0 if exact else 1e-6)


def _mix_sweep(op: str, src: str, dst: str):
    def run(device: str) -> str:
        gap = 0.0
        for shape, fmt in (((4, 3, 17, 23), "contiguous"), ((4, 3, 17, 23), "channels_last"),
                           ((6, 3, 5, 7), "contiguous"), ((8, 3, 32, 32), "channels_last")):
            x = _batch(shape, DTYPES[src], fmt, seed=sum(shape))
            gap = max(gap, check_mix(x, _params(x, op, seed=shape[-1]), device, DTYPES[dst], f"{shape} {fmt}"))
        return f"odd and 32 px sizes, both layouts; max gap {gap:.2g}"
    return run


for _op in mixing.OPS:
    for _src, _dst in (("fp32", "fp32"), ("bf16", "bf16"), ("fp32", "bf16")):
        case(f"mix/{_op}/{_src}->{_dst}")(_mix_sweep(_op, _src, _dst))


def _mix_lam_edges(op: str):
    def run(device: str) -> str:
        x = _batch((6, 3, 17, 23), torch.float32, "channels_last", seed=3)
        for lam in (torch.zeros(6), torch.ones(6), torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1.0])):
            check_mix(x, _params(x, op, lam=lam), device, what=f"lam {lam.tolist()}")
        from sdmp_fast.kernels.mixing import mix
        xd = x.to(device)
        same, _ = mix(xd, torch.ones(6, device=device), op, generator=torch.Generator(device=device).manual_seed(0))
        if op != "resizemix":  # lam = 1 keeps the image (ResizeMix always pastes at least 10 %)
            assert torch.equal(same.cpu(), x), "lam = 1 changed the image"
        if op == "cutmix":
            other, _ = mix(xd, torch.zeros(6, device=device), op)
            assert torch.equal(other.cpu(), x.flip(0)), "lam = 0 is not the partner"
        return "lam 0, 1 and mixed; lam = 1 identity, CutMix lam = 0 partner"
    return run


def _mix_border_boxes(op: str):
    def run(device: str) -> str:
        H, W = 17, 23
        x = _batch((6, 3, H, W), torch.float32, "contiguous", seed=4)
        p = _params(x, op)
        for h, w in ((1, 1), (1, W), (H, 1), (H, W), (H - 1, W - 2), (0, 5)):
            top = torch.tensor([0, H - h, 0, H - h, (H - h) // 2, 0])
            left = torch.tensor([0, W - w, W - w, 0, 0, (W - w) // 2])
            q = dataclasses.replace(p, height=torch.full((6,), h), width=torch.full((6,), w), top=top, left=left)
            check_mix(x, q, device, what=f"box {h}x{w}")
        return "boxes of 1 px, full rows/columns, the whole image and none, at every border and corner"
    return run


for _op in ("cutmix", "resizemix"):
    case(f"mix/{_op}/border_boxes")(_mix_border_boxes(_op))
for _op in mixing.OPS:
    case(f"mix/{_op}/lam_0_and_1")(_mix_lam_edges(_op))


@case("mix/odd_batch_and_strided_input")
def _mix_odd_strided(device: str) -> str:
    x = _batch((5, 3, 9, 11), torch.float32, "contiguous", seed=5)
    for op in mixing.OPS:
        check_mix(x, _params(x, op), device, what=f"odd batch {op}")
    big = _batch((4, 3, 20, 30), torch.bfloat16, "channels_last", seed=6)
    view = big[:, :, 1:18, 2:25]  # neither contiguous nor channels_last-contiguous
    for op in mixing.OPS:
        check_mix(view, _params(view, op), device, torch.float32, what=f"strided {op}")
    return "B = 5 (the middle sample mixes with itself); a strided bf16 slice to fp32"


# ----------------------------------------------------------------------------------------------- augmentation


def view_params(b: int, h: int, w: int, **kw) -> aug.ViewParams:
    """Identity parameters (whole image, no op) for ``b`` images; ``kw`` overrides fields (scalar or list)."""
    base = dict(top=0, left=0, height=h, width=w, flip=False, jitter=False, brightness=1.0, contrast=1.0,
                saturation=1.0, hue=0.0, gray=False, blur=False, sigma=0.0, solarize=False)
    base.update(kw)
    out = {}
    for k, v in base.items():
        v = v if isinstance(v, list) else [v] * b
        dtype = torch.int64 if k in ("top", "left", "height", "width") else (
            torch.bool if isinstance(v[0], bool) else torch.float32)
        out[k] = torch.tensor(v, dtype=dtype)
    return aug.ViewParams(**out)


ALL_ON = dict(flip_p=0.5, jitter_p=0.8, jitter=(0.4, 0.4, 0.2, 0.1), gray_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0),
              solarize_p=0.2)


def one_view(size: int, mean=ID_MEAN, std=ID_STD, **spec) -> Recipe:
    return Recipe("t", (ViewSpec(size=size, **{**ALL_ON, **spec}),), mean, std)


def _near_threshold(canvas, sizes, params, recipe) -> list[torch.Tensor]:
    """Per view: elements whose value before solarize lies within 1e-4 of the threshold (a float32 rounding
    difference may flip them), from the reference run without solarize."""
    off = [dataclasses.replace(p, solarize=torch.zeros_like(p.solarize)) for p in params]
    views = aug.apply_views(canvas, sizes, off, recipe)
    m, s = torch.tensor(recipe.mean).view(1, 3, 1, 1), torch.tensor(recipe.std).view(1, 3, 1, 1)
    return [((v * s + m) - spec.solarize_threshold / 255).abs() < 1e-4 for v, spec in zip(views, recipe.views)]


def check_views(canvas, sizes, params, recipe, device: str, out_dtype=torch.float32, what="",
                canvas_device: torch.Tensor | None = None) -> float:
    """Kernel apply_views on ``device`` vs augment.apply_views on the CPU, view by view."""
    from sdmp_fast.kernels.augment import apply_views
    images = canvas_device if canvas_device is not None else canvas.to(device)
    out = apply_views(images, sizes.to(device), [p.to(device) for p in params], recipe, out_dtype=out_dtype)
    ref = aug.apply_views(canvas, sizes, params, recipe, out_dtype=out_dtype)
    skip = _near_threshold(canvas, sizes, params, recipe)
    assert len(out) == len(ref)
    gap = 0.0
    for k, (o, r) in enumerate(zip(out, ref)):
        assert o.is_contiguous(memory_format=torch.channels_last), f"{what} view {k}: not channels-last"
        gap = max(gap, assert_close(o, r, f"{what} view {k}", atol=F32_ATOL, rtol=0.0, skip=skip[k]))
    return gap


S = 15  # odd view size


def _square(n: int = 4, size: int = S):
    canvas, sizes = canvas_of([texture(size, size, 10 + k) for k in range(n)])
    return canvas, sizes


def _crop_case(interpolation: str):
    def run(device: str) -> str:
        cubic = interpolation == "bicubic"
        # bicubic: the first image has a black/white checkerboard, where the clipping of the horizontal pass acts
        first = edges_image(45, 61) if cubic else texture(45, 61, 0)
        imgs = [first, texture(20, 15, 1), texture(60, 39, 2), texture(32, 32, 3), texture(9, 50, 4)]
        canvas, sizes = canvas_of(imgs)
        # (top, left, h, w): strong and mild downscale, upscale, a whole image, a thin box; boxes on every border
        boxes = [[(5, 3, 40, 50), (0, 0, 20, 15), (0, 0, 60, 39), (10, 2, 15, 4), (0, 40, 9, 10)],
                 [(0, 0, 45, 61), (11, 9, 9, 6), (59, 38, 1, 1), (0, 31, 32, 1), (8, 0, 1, 50)]]
        if cubic:  # an upscale through the checkerboard
            boxes.append([(10, 21, 9, 12), (3, 2, 12, 12), (20, 5, 30, 30), (2, 2, 2, 30), (0, 0, 9, 50)])
        gap = 0.0
        for k, bx in enumerate(boxes):
            p = view_params(5, 0, 0, top=[b[0] for b in bx], left=[b[1] for b in bx], height=[b[2] for b in bx],
                            width=[b[3] for b in bx], flip=[True, False, True, False, k == 0])
            recipe = one_view(S, interpolation=interpolation)
            gap = max(gap, check_views(canvas, sizes, [p], recipe, device, what=f"boxes {k}"))
        return f"{interpolation}: downscale, upscale, 1 px and thin boxes at the borders, flips; max gap {gap:.2g}"
    return run


case("augment/crop_resize_flip")(_crop_case("bilinear"))
case("augment/crop_bicubic")(_crop_case("bicubic"))


def _colour_case(field: str, values: list[float]):
    def run(device: str) -> str:
        canvas, sizes = _square()
        p = view_params(4, S, S, jitter=True, **{field: values})
        gap = check_views(canvas, sizes, [p], one_view(S), device, what=field)
        return f"{field} {values}; max gap {gap:.2g}"
    return run


for _field, _values in (("brightness", [0.6, 0.9, 1.25, 1.4]), ("contrast", [0.6, 0.85, 1.2, 1.4]),
                        ("saturation", [0.0, 0.8, 1.1, 1.2]), ("hue", [-0.1, 0.0, 0.04, 0.1])):
    case(f"augment/{_field}")(_colour_case(_field, _values))


@case("augment/jitter_gray_solarize")
def _aug_jitter(device: str) -> str:
    canvas, sizes = _square()
    f = dict(brightness=[1.3, 0.7, 1.0, 1.0], contrast=[0.7, 1.3, 1.1, 1.0], saturation=[1.2, 0.8, 0.9, 1.0],
             hue=[0.08, -0.05, 0.0, 0.0])
    p = view_params(4, S, S, jitter=[True, True, True, False], gray=[False, True, False, True],
                    solarize=[True, False, True, True], **f)
    gap = check_views(canvas, sizes, [p], one_view(S, mean=MEAN, std=STD), device, what="jitter")
    return f"all four jitter ops, grayscale, solarize, normalise; max gap {gap:.2g}"


@case("augment/blur_then_solarize")
def _aug_blur(device: str) -> str:
    canvas, sizes = _square(5, 24)
    sig = [0.3, 0.9, 1.7, 2.0, 0.0]  # 3, 7, 13, 13 taps and none
    p = view_params(5, 24, 24, blur=[s > 0 for s in sig], sigma=sig, solarize=[False, True, True, False, True],
                    jitter=True, contrast=[1.2, 0.8, 1.0, 1.3, 0.9])
    gap = check_views(canvas, sizes, [p], one_view(24, mean=MEAN, std=STD), device, what="blur")
    return f"per-sample sigma (reflect padding at 24 px), blur before solarize; max gap {gap:.2g}"


def _recipe_case(kind: str, dtype: str):
    def run(device: str) -> str:
        imgs = [texture(40, 31, 20), texture(27, 47, 21), texture(48, 48, 22), texture(21, 35, 23)]
        canvas, sizes = canvas_of(imgs)
        recipe = (mocov3_recipe(16, 0.2, MEAN, STD) if kind == "mocov3"
                  else dino_recipe(16, 9, 2, (0.4, 1.0), (0.05, 0.4), MEAN, STD))
        # the recipes' blur sigmas are scaled to 16 px views (tiny); scale them up to exercise the blur
        recipe = dataclasses.replace(recipe, views=tuple(dataclasses.replace(v, blur_sigma=(0.1, 1.0))
                                                         for v in recipe.views))
        params = aug.sample_view_params(recipe, sizes, torch.Generator().manual_seed(1))
        gap = check_views(canvas, sizes, params, recipe, device, DTYPES[dtype], what=kind)
        sizes_ = sorted(set(recipe.sizes))
        return f"{kind} recipe ({len(recipe.views)} views, sizes {sizes_}), {dtype}; max gap {gap:.2g}"
    return run


for _kind in ("mocov3", "dino"):
    for _dtype in DTYPES:
        case(f"augment/recipe_{_kind}_{_dtype}")(_recipe_case(_kind, _dtype))


@case("augment/nhwc_canvas")
def _aug_nhwc(device: str) -> str:
    """The ffcv loader's canvas: [B, Hmax, Wmax, 3] storage seen as [B, 3, Hmax, Wmax] (no copy)."""
    canvas, sizes = canvas_of([texture(33, 20, 30), texture(18, 37, 31), texture(25, 25, 32)])
    recipe = one_view(11, mean=MEAN, std=STD, blur_sigma=(0.1, 1.0), solarize_p=0.5, gray_p=0.5)
    params = aug.sample_view_params(recipe, sizes, torch.Generator().manual_seed(2))
    nhwc = canvas.permute(0, 2, 3, 1).contiguous().to(device).permute(0, 3, 1, 2)
    gap = check_views(canvas, sizes, params, recipe, device, what="nhwc", canvas_device=nhwc)
    return f"channels-last uint8 canvas; max gap {gap:.2g}"


# ----------------------------------------------------------------------------------------------- integration

METHOD_TINY = {
    "mocov3": {"method.hidden_dim": 64, "method.out_dim": 32},
    "dino": {"method.name": "dino", "model.backbone": "vit_tiny_p4_dino", "data.local_crops": 2,
             "data.local_size": 16, "method.dino_out_dim": 128, "method.dino_hidden_dim": 64,
             "method.dino_bottleneck_dim": 32},
}


def _method_case(kind: str, op: str):
    def run(device: str) -> str:
        """An SDMP forward with sdmp.impl=triton equals the one with sdmp.impl=torch (same weights and draws)."""
        from sdmp_fast.config import load_config
        from sdmp_fast.methods import build_method
        from sdmp_fast.methods.base import method_recipe
        from sdmp_fast.models import build_backbone
        from sdmp_fast.streams import StepRandom
        loss = {}
        for impl in ("torch", "triton"):
            cfg = load_config(overrides={**METHOD_TINY[kind], "sdmp.impl": impl, "sdmp.ops": [op]})
            torch.manual_seed(0)
            method = build_method(cfg, build_backbone(cfg)).to(device).to(memory_format=torch.channels_last)
            g = torch.Generator().manual_seed(1)
            views = [torch.randn(4, 3, s, s, generator=g).to(device).contiguous(memory_format=torch.channels_last)
                     for s in method_recipe(cfg).sizes]
            loss[impl] = method(views, StepRandom.create(0, 0, torch.device(device)))[0].detach().float().cpu()
        tol = 1e-5 if device == "cpu" else 1e-3  # cuDNN convolutions may round inputs to TF32 on a GPU
        assert torch.allclose(loss["triton"], loss["torch"], rtol=tol, atol=tol), loss
        return f"{kind} + SDMP ({op}) forward: loss {float(loss['triton']):.5f} with both impls"
    return run


case("integration/mocov3_step")(_method_case("mocov3", "resizemix"))
case("integration/dino_step")(_method_case("dino", "cutmix"))


@case("integration/nvjpeg_loader")
def _loader_case(device: str) -> str:
    """The nvjpeg loader's batch with data.augment_impl=triton equals the one with torch (same draws)."""
    import tempfile

    from loaders.nvjpeg import build
    from sdmp_fast.config import load_config
    from sdmp_fast.data.folders import scan_folder
    from sdmp_fast.data.generate import write_jpeg_folder
    with tempfile.TemporaryDirectory() as tmp:
        write_jpeg_folder(Path(tmp) / "train", classes=2, per_class=2, sizes=((37, 29), (24, 40)))
        split, _ = scan_folder(Path(tmp) / "train")
        recipe = dino_recipe(16, 9, 1, (0.4, 1.0), (0.05, 0.4), MEAN, STD)
        batches = {}
        for impl in ("torch", "triton"):
            cfg = load_config(overrides={"data.loader": "nvjpeg", "data.augment_impl": impl, "data.batch_size": 4,
                                         "data.cache_dir": tmp})
            loader = build(cfg, recipe, device=device, split=split)
            batches[impl] = loader.make_batch(0, [0, 1, 2, 3])
    for k, (a, b) in enumerate(zip(batches["triton"].views, batches["torch"].views)):
        assert a.device.type == torch.device(device).type
        assert_close(a.cpu(), b.cpu(), f"view {k}", atol=F32_ATOL if device == "cpu" else 2e-2, rtol=0.0)
    return f"{len(batches['triton'].views)} views of 4 JPEGs (sizes {recipe.sizes})"


@case("doctor/kernel_twins")
def _doctor_twins(device: str) -> str:
    """The doctor's GPU check, small (interpreter) or at full size (CUDA)."""
    from sdmp_fast.health.kernels import kernel_twins
    small = dict(global_size=16, local_size=8, canvas=(20, 28), batch=2) if device == "cpu" else {}
    return f"{kernel_twins(device, **small)} outputs"


# ----------------------------------------------------------------------------------------------- runner

def run_all(device: str, names: list[str] | None = None) -> dict[str, dict]:
    results = {}
    for name in names or list(CASES):
        t0 = time.perf_counter()
        try:
            detail, ok = CASES[name](device), True
        except Exception as e:  # noqa: BLE001 - reported per case
            detail, ok = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}", False
        results[name] = {"ok": ok, "detail": detail, "seconds": round(time.perf_counter() - t0, 2)}
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    print(json.dumps(run_all(device, sys.argv[2:] or None)))  # optional: the names of the cases to run
