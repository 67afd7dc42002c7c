"""Every kernel compiles ahead of time for sm_90 (PTX and cubin) on a machine without a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_kernel_compiles_for_sm90_without_a_gpu(tmp_path):
    # a fresh process without TRITON_INTERPRET: kernels decorated under the interpreter cannot be compiled
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "triton-cache"), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "sdmp_fast.kernels.aot", "--arch", "90"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    for op in ("mixup", "cutmix", "resizemix"):
        assert any(label.startswith(f"mix/{op}/") for label in report), op
    for kernel in ("crop", "crop+finish", "colour", "blur_rows", "blur_cols"):
        assert f"augment/{kernel}" in report, kernel
    for label, sizes in report.items():
        assert sizes["ptx"] > 0 and sizes["cubin"] > 0, (label, sizes)  # cubin: ptxas from triton's wheel ran
