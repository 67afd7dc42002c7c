"""Triton kernels vs their torch references: under the interpreter on CPU, and compiled on CUDA (gpu marker).

The interpreter parity run: every case of kernel_parity.py in ONE subprocess per session.
``TRITON_INTERPRET=1`` must be set before triton decorates the kernels, and the pytest process may already
have imported triton (timm does) or the compiled kernels (the gpu tests): so the interpreter gets a process
of its own, and the tests read its JSON report. (A fixture here, not in a conftest.py: tests import the
top-level ``conftest`` by name, and a second conftest module would shadow it.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kernel_parity
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def interpreter_results() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(HERE / "kernel_parity.py"), "cpu"], env=env, capture_output=True,
                       text=True, timeout=900)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        pytest.fail(f"the interpreter parity run failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(lines[-1])


NAMES = list(kernel_parity.CASES)


def test_every_op_and_stage_has_a_case():
    ops = {n.split("/")[1] for n in NAMES if n.startswith("mix/")} - {"odd_batch_and_strided_input"}
    assert ops == {"mixup", "cutmix", "resizemix"}
    for stage in ("crop_resize_flip", "brightness", "contrast", "saturation", "hue", "jitter_gray_solarize",
                  "blur_then_solarize", "nhwc_canvas", "recipe_mocov3_bf16", "recipe_dino_fp32"):
        assert f"augment/{stage}" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_interpreter_parity(interpreter_results, name):
    result = interpreter_results[name]
    assert result["ok"], result["detail"]


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_compiled_parity_on_cuda(name):
    kernel_parity.CASES[name]("cuda")
