"""The Triton kernels: compiled ahead of time for a GPU architecture (any machine), and against their torch
twins on the GPU (a GPU machine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from sdmp_fast.health import Skipped


def compile_for_arch(arch: int, env: dict | None = None, timeout: float = 600) -> tuple[dict, str]:
    """({label: sizes}, triton version) of ``python -m sdmp_fast.kernels.aot --arch ARCH`` in a fresh process
    (``env``: its environment, default this one less ``TRITON_INTERPRET``: interpreted kernels cannot compile)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "sdmp_fast.kernels.aot", "--arch", str(arch)], env=env,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"the ahead-of-time compile failed (exit {r.returncode}): "
                           + (r.stderr.strip().splitlines() or ["no output"])[-1])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["kernels"], out["triton"]


def device_arch() -> tuple[int, str]:
    """(compute capability as 90, where it came from): this GPU's, or sm_90 (H100/H200) without one."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return major * 10 + minor, "this GPU"
    return 90, "no GPU: the H100/H200 target"


def triton_compile() -> str:
    try:
        import triton  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise Skipped(f"triton cannot be imported ({type(e).__name__})") from e
    arch, why = device_arch()
    report, version = compile_for_arch(arch)
    empty = [label for label, sizes in report.items() if not (sizes["ptx"] and sizes["cubin"])]
    if empty:
        raise RuntimeError(f"no PTX or cubin for {', '.join(empty)}")
    return f"{len(report)} kernel variants compiled to PTX and cubin for sm_{arch} ({why}), triton {version}"


def kernel_twins(device: str | torch.device, global_size: int = 224, local_size: int = 96,
                 canvas: tuple[int, int] = (300, 400), batch: int = 8) -> int:
    """Each kernel against its torch twin on ``device``: the views of a MoCo v3 and a DINO recipe from one
    uint8 canvas (bf16 out: the loaders' CUDA dtype), and every mixing op; returns the outputs compared.
    (On a CPU under ``TRITON_INTERPRET=1``: tests/kernels/kernel_parity.py runs it small.)"""
    from sdmp_fast.augment import apply_views as reference_views
    from sdmp_fast.augment import sample_view_params
    from sdmp_fast.augment.recipes import dino_recipe, mocov3_recipe
    from sdmp_fast.kernels.augment import apply_views
    from sdmp_fast.kernels.mixing import mix
    from sdmp_fast.mixing import OPS
    from sdmp_fast.mixing import mix as reference_mix
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, *canvas), dtype=torch.uint8, device=dev, generator=g)
    sizes = torch.tensor([list(canvas)] * batch, device=dev)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    checked = 0
    for recipe in (mocov3_recipe(global_size, 0.08, mean, std),
                   dino_recipe(global_size, local_size, 2, (0.4, 1.0), (0.05, 0.4), mean, std)):
        params = sample_view_params(recipe, sizes, torch.Generator(device=dev).manual_seed(1))
        for a, b in zip(apply_views(images, sizes, params, recipe, torch.bfloat16),
                        reference_views(images, sizes, params, recipe, torch.float32)):
            gap = float((a.float() - b).abs().max())
            if gap > 0.1:  # bf16 rounding of normalised values (and the CUDA reference's float16 resampling)
                raise AssertionError(f"{recipe.name} view {tuple(a.shape)}: max gap {gap:.3g} to the torch twin")
            checked += 1
    x = torch.randn(batch, 3, 24, 40, device=dev, generator=g).contiguous(memory_format=torch.channels_last)
    lam = torch.rand(batch, device=dev, generator=g)
    for op in OPS:
        a, la = mix(x, lam, op, generator=torch.Generator(device=dev).manual_seed(2))
        b, lb = reference_mix(x, lam, op, generator=torch.Generator(device=dev).manual_seed(2))
        if not (torch.allclose(a, b, atol=1e-5) and torch.equal(la, lb)):
            raise AssertionError(f"mix {op}: the kernel differs from its torch twin")
        checked += 1
    return checked


def triton_parity_on_gpu() -> str:
    if not torch.cuda.is_available():
        raise Skipped("no CUDA GPU (the kernels are checked on the CPU by the tests, under the interpreter)")
    n = kernel_twins("cuda")
    return f"{n} kernel outputs equal their torch twins on {torch.cuda.get_device_name()}"
