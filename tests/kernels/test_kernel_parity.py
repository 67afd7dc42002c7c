"""Triton kernels vs their torch references: under the interpreter on CPU, and compiled on CUDA (gpu marker).

The interpreter parity run: every case of kernel_parity.py in ONE subprocess per session under this
environment's triton, and a subset that launches every kernel variant (``CASES_36``) in one more under triton
3.6.0, the GPU machines' version (tests/kernels/triton_versions.py).
``TRITON_INTERPRET=1`` must be set before triton decorates the kernels, and the pytest process may already
have imported triton (timm does) or the compiled kernels (the gpu tests): so the interpreter gets a process
of its own, and the tests read its JSON report. (A fixture here, not in a conftest.py: tests import the
top-level ``conftest`` by name, and a second conftest module would shadow it.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kernel_parity
import pytest
from triton_versions import env_for

HERE = Path(__file__).resolve().parent


def _interpret(version: str, names: list[str]) -> dict:
    r = subprocess.run([sys.executable, str(HERE / "kernel_parity.py"), "cpu", *names],
                       env=env_for(version, TRITON_INTERPRET="1"), capture_output=True, text=True, timeout=900)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        pytest.fail(f"the interpreter parity run (triton {version}) failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(lines[-1])


NAMES = list(kernel_parity.CASES)
# every kernel variant once: each mixing op, each dtype pair, a strided input; every augmentation pass (crop,
# bilinear and bicubic, colour, both blurs, the fused finish), bf16 out and an NHWC canvas; the doctor's check
CASES_36 = ["mix/mixup/fp32->fp32", "mix/cutmix/bf16->bf16", "mix/resizemix/fp32->bf16",
            "mix/odd_batch_and_strided_input", "augment/crop_resize_flip", "augment/crop_bicubic", "augment/contrast",
            "augment/jitter_gray_solarize", "augment/blur_then_solarize", "augment/recipe_mocov3_bf16",
            "augment/nhwc_canvas", "doctor/kernel_twins"]


@pytest.fixture(scope="session")
def interpreter_results() -> dict:
    return _interpret("ci", NAMES)


@pytest.fixture(scope="session")
def interpreter_results_36() -> dict:
    return _interpret("3.6", CASES_36)


def test_every_op_and_stage_has_a_case():
    ops = {n.split("/")[1] for n in NAMES if n.startswith("mix/")} - {"odd_batch_and_strided_input"}
    assert ops == {"mixup", "cutmix", "resizemix"}
    for stage in ("crop_resize_flip", "crop_bicubic", "brightness", "contrast", "saturation", "hue",
                  "jitter_gray_solarize", "blur_then_solarize", "nhwc_canvas", "recipe_mocov3_bf16",
                  "recipe_dino_fp32"):
        assert f"augment/{stage}" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_interpreter_parity(interpreter_results, name):
    result = interpreter_results[name]
    assert result["ok"], result["detail"]


@pytest.mark.parametrize("name", CASES_36)
def test_interpreter_parity_under_triton_36(interpreter_results_36, name):
    result = interpreter_results_36[name]
    assert result["ok"], result["detail"]


def test_the_36_subset_launches_every_kernel():
    assert set(CASES_36) <= set(NAMES)
    assert {n.split("/")[1] for n in CASES_36 if n.startswith("mix/")} >= {"mixup", "cutmix", "resizemix"}


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_compiled_parity_on_cuda(name):
    kernel_parity.CASES[name]("cuda")
