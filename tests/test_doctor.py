"""``python -m sdmp_fast.doctor``: the table, the exit code, the planned-run checks and one failure per kind of check.

The heavy checks run once in the suite, in their own tests, which call the same functions (DALI graphs:
tests/loaders/test_dali.py; fake-CUDA step: tests/engine/test_fake_cuda.py; Triton compile:
tests/kernels/test_aot_compile.py); here the doctor runs them only where a test plants a failure.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import EVAL_TINY

from sdmp_fast import doctor
from sdmp_fast.health import Skipped, run_check


def test_the_command_prints_one_line_per_check_and_exits_0(tmp_path, capsys):
    assert doctor.main(["--only", "versions,loaders,gpu-eager-step", "--json", str(tmp_path / "d.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("versions") and " ok " in lines[0] and f"torch {torch.__version__}" in lines[0]
    assert lines[1].startswith("loaders") and "torch" in lines[1] and "synthetic" in lines[1]
    status = "ok" if torch.cuda.is_available() else "skipped"
    assert lines[2].startswith("gpu-eager-step") and f" {status} " in lines[2]
    assert lines[-1] == f"doctor: {2 + (status == 'ok')} ok, {int(status == 'skipped')} skipped, 0 FAILED"
    assert [o["name"] for o in json.loads((tmp_path / "d.json").read_text())] == ["versions", "loaders",
                                                                                    "gpu-eager-step"]


def test_the_old_contrast_centre_fails_the_doctor_naming_the_check(monkeypatch, capsys):
    pytest.importorskip("nvidia.dali")
    from planted import old_dali_brightness_contrast

    import loaders.dali
    monkeypatch.setattr(loaders.dali, "_brightness_contrast", old_dali_brightness_contrast)
    assert doctor.main(["--only", "loaders,dali-gpu-graphs"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^dali-gpu-graphs +FAILED +\(ValueError: Invalid device \"gpu\" for argument 'contrast_center'",
                     out, re.MULTILINE), out
    assert out.strip().splitlines()[-1] == "doctor: 1 ok, 0 skipped, 1 FAILED (dali-gpu-graphs)"


def test_an_unknown_check_is_a_usage_error(capsys):
    assert doctor.main(["--only", "versoins"]) == 2
    assert "unknown check versoins" in capsys.readouterr().err


def test_outcomes_of_a_check():
    def skipped():
        raise Skipped("no GPU")

    def broken():
        raise RuntimeError("first line\nsecond line")
    assert run_check("a", lambda: "evidence").line().startswith("a                      ok      (evidence)")
    assert run_check("b", skipped).status == "skipped"
    bad = run_check("c", broken)
    assert bad.failed and bad.detail == "RuntimeError: first line"


def test_versions_fail_without_timm(monkeypatch):
    from sdmp_fast.health import environment
    monkeypatch.setattr(environment, "_version", lambda m: "not installed" if m == "timm" else "1.0")
    with pytest.raises(RuntimeError, match="timm missing"):
        environment.installed_versions()


def test_a_loader_that_does_not_import_fails(monkeypatch):
    from sdmp_fast.health import environment
    from sdmp_fast.registry import MissingBackend

    def get(name):
        raise MissingBackend(f"{name} broken")
    monkeypatch.setattr(environment.LOADERS, "get", get)
    with pytest.raises(MissingBackend, match="nvjpeg broken"):
        environment.loaders_importable()


def test_a_failed_triton_compile_fails_the_check(monkeypatch):
    from sdmp_fast.health import kernels
    monkeypatch.setattr(kernels.sys, "executable", "/bin/false")  # the compile process exits 1
    with pytest.raises(RuntimeError, match="ahead-of-time compile failed \\(exit 1\\)"):
        kernels.triton_compile()


def test_the_gpu_checks_cpu_twins(monkeypatch):
    """What the doctor runs on the GPU, on the CPU: a batch of each loader, an eager step; a NaN step fails."""
    from sdmp_fast.health import gpu
    assert gpu.loader_batches("cpu", ("torch", "synthetic", "nvjpeg")) == "one batch of torch, synthetic, nvjpeg on cpu"
    assert gpu.eager_step("cpu").startswith("MoCo v3 + SDMP, 2 steps on cpu")
    monkeypatch.setenv("SDMP_FAULT", "nan@2")
    with pytest.raises(AssertionError, match="non-finite loss"):
        gpu.eager_step("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(Skipped, match="no CUDA GPU"):
            gpu.gpu_graph_step()


def _planned(image_folder, *extra) -> list[str]:
    return [*EVAL_TINY, "--data", str(image_folder), "--only", "run-data,run-output,run-space,run-step", *extra]


def test_a_planned_run_is_checked(image_folder, session_cache, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    code = doctor.main(_planned(image_folder, "--out", str(out), f"data.cache_dir={session_cache}"))
    text = capsys.readouterr().out
    assert code == 0, text
    assert "run-data" in text and "images in" in text and "(torch loader)" in text
    assert f"{out} writable" in text and not (tmp_path / "new").exists()  # nothing left behind
    assert "GiB in /dev/shm" in text and "one step of mocov3 at batch 8 on cpu: loss" in text


def test_a_planned_run_with_bad_data_an_unwritable_output_and_too_little_space_fails(tmp_path, monkeypatch, capsys):
    from sdmp_fast.health import plan
    monkeypatch.setattr(plan, "MIN_SHM", 2**60)
    (tmp_path / "file").write_text("x")
    code = doctor.main([*EVAL_TINY, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "file" / "run"),
                        "--only", "run-data,run-output,run-space"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert [ln.split()[1] for ln in lines[:3]] == ["FAILED"] * 3, lines
    assert "missing" in lines[0] and "NotADirectoryError" in lines[1] and "shm-size" in lines[2]


def test_a_planned_run_whose_first_step_diverges_fails(image_folder, session_cache, monkeypatch, capsys):
    monkeypatch.setenv("SDMP_FAULT", "nan@1")
    assert doctor.main(_planned(image_folder, f"data.cache_dir={session_cache}", "--only", "run-step")) == 1
    assert re.search(r"^run-step +FAILED +\(AssertionError: the first step's loss is nan\)", capsys.readouterr().out,
                     re.MULTILINE)
