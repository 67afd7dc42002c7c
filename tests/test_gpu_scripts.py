"""`make gpu-check` (doctor + gpu-test + gpu-bench) as a CPU dry run at tiny sizes (GPU_CHECK_DRY=1): the
scripts, their outputs under GPU_CHECK_OUT and the summary cannot rot unseen. The figures are not judged here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _make(target: str, out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(out), **env})


def test_gpu_check_dry_run_writes_everything_and_ends_with_a_short_summary(tmp_path):
    out = tmp_path / "gpu-check"
    r = _make("gpu-check", out, GPU_CHECK_DRY="1", GPU_TEST_PATHS="tests/loaders/test_base.py")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("doctor.txt", "doctor.json", "gpu-test.xml", "gpu-test.log", "gpu-bench.json", "gpu-bench.md",
                 "gpu-bench.log", "gpu-check.log", "summary.txt"):
        assert (out / name).is_file(), name
    doctor = {c["name"]: c["status"] for c in json.loads((out / "doctor.json").read_text())}
    assert set(doctor) == {"gpu-eager-step", "gpu-graph-step"}
    assert ET.parse(out / "gpu-test.xml").getroot().iter("testcase")
    bench = json.loads((out / "gpu-bench.json").read_text())
    assert {"mixing", "step_modes", "single_view", "e2e"} <= set(bench["results"]) and bench["targets"]
    summary = (out / "summary.txt").read_text().strip().splitlines()
    assert len(summary) <= 40 and summary[0] == "== gpu-check summary"
    assert summary[-1].startswith("gpu-check: passed in ") and "(limit 360 s)" in summary[-1]
    assert r.stdout.strip().splitlines()[-len(summary):] == summary  # the output ends with it
    assert any(line.startswith(("met ", "NOT met ", "not measured ")) for line in summary)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the GPU targets would run")
def test_without_a_gpu_the_gpu_targets_refuse_to_run(tmp_path):
    r = _make("gpu-bench", tmp_path, GPU_CHECK_DRY="0")
    assert r.returncode == 2 and "gpu-bench: no CUDA device visible to torch" in r.stderr
