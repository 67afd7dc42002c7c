"""benchmarks/throughput.py and its sections: step modes (FLOPs, MFU, the SDMP step target), e2e, the report."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import throughput  # noqa: E402
from benchmarks.sections import report, step  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick CPU run of the step and e2e sections (batch 8, torch loader in-process, 1 + 2 e2e steps), with an
    unknown mode and an unknown loader."""
    tmp = tmp_path_factory.mktemp("throughput")
    out = throughput.main(["--only", "step,e2e", "--quick", "--device", "cpu", "--json", str(tmp / "t.json"),
                           "--report", str(tmp / "t.md"), "--step-batches", "8",
                           "--step-modes", "eager,compile,graph,warp",
                           "--e2e-loaders", "synthetic,torch,nosuch", "--e2e-batch", "8", "--e2e-warmup", "1",
                           "--e2e-steps", "2", "--e2e-workers", "0"])
    return out, tmp


def test_step_modes_rows_flops_and_mfu(quick_run):
    out, _ = quick_run
    res = out["results"]
    assert out["failures"] == []
    peak = res["peak"][0]
    assert peak["tflops"] > 0 and peak["dtype"] == "float32" and "matmul" in peak["name"]
    rows = {(r["method"], r["mode"]): r for r in res["step_modes"]}
    for method in ("mocov3+sdmp", "dino+sdmp"):
        eager = rows[(method, "eager")]
        assert eager["status"] == "ok" and eager["batch"] == 8
        assert eager["step_ms"] > 0 and eager["images_per_s"] > 0 and eager["speedup_vs_eager"] == 1.0
        # attention is counted on CPU (torch has no formula for its CPU flash kernel)
        assert eager["flops_per_step"] > eager["attention_flops_per_step"] > 0
        assert 0 < eager["mfu"] and eager["peak"] == peak["name"]
        assert rows[(method, "graph")]["status"].startswith("skipped: CUDA only")
        assert rows[(method, "compile")]["status"].startswith("skipped on CPU")
        assert rows[(method, "warp")]["status"].startswith("unknown mode 'warp'")
    for single in res["single_view"]:
        assert single["images_per_s"] > 0 and single["attention_flops"] > 0
        assert single["meta_check"].startswith("equal"), single  # the CPU attention formulas agree with meta
    (target,) = res["step_targets"]
    assert target["mode"] == "eager" and target["ratio_step_over_single_view_third"] > 0
    assert target["ratio_step_over_single_view_third"] == pytest.approx(
        3 * target["sdmp_step_images_per_s"] / target["single_view_fwd_bwd_images_per_s"], rel=1e-2)
    assert {"mocov3", "dino"} <= {r["method"] for r in res["step"] if "ratio_sdmp_over_plain" in r}


def test_e2e_rows_and_unknown_loader(quick_run):
    out, _ = quick_run
    rows = {r["loader"]: r for r in out["results"]["e2e"]}
    assert list(rows) == ["synthetic", "torch", "nosuch"]
    for name in ("synthetic", "torch"):
        r = rows[name]
        assert r["status"] == "ok" and r["images_per_s"] > 0 and r["measured_steps"] >= 2
        assert r["fraction_of_synthetic"] > 0
    assert rows["synthetic"]["fraction_of_synthetic"] == 1.0
    assert rows["nosuch"]["status"].startswith("unknown loader 'nosuch'") and "torch" in rows["nosuch"]["status"]


def test_json_and_report(quick_run):
    out, tmp = quick_run
    saved = json.loads((tmp / "t.json").read_text())
    assert saved["results"]["e2e"] == json.loads(json.dumps(out["results"]["e2e"]))
    md = (tmp / "t.md").read_text()
    for heading in ("## Machine and versions", "## Targets", "## Peak (the MFU denominator)",
                    "## Training step: eager / unfused / compile / graph", "## Single-view forward+backward",
                    "## End-to-end training", "## step", "## Failures"):
        assert heading in md, heading
    assert out["results"]["peak"][0]["name"] in md and "FlopCounterMode" in md
    assert "end-to-end dali >= 0.9 x synthetic" in md and "not measured" in md


def test_a_mode_this_build_lacks_reads_not_available(monkeypatch):
    monkeypatch.setitem(step.MODES, "graph", {"run.no_such_switch": True})
    row = step.time_mode(torch.device("cpu"), "mocov3", "vit_tiny_p4", 32, 8,
                         {"method.hidden_dim": 64}, "graph", dict(warmup=0, steps=1, repeats=1), False)
    assert row["status"].startswith("not available in this build (ConfigError:") and "unknown key" in row["status"]


def test_targets_on_gpu_figures():
    """The target judgement on made-up CUDA rows (no GPU needed): graph speedup at small batches, dali fraction."""
    out = {"env": {"device": "cuda"}, "results": {
        "e2e": [{"loader": "synthetic", "status": "ok", "fraction_of_synthetic": 1.0},
                {"loader": "dali", "status": "ok", "fraction_of_synthetic": 0.93}],
        "step_modes": [
            {"method": "mocov3+sdmp", "backbone": "vit_small", "mode": "graph", "batch": 32, "status": "ok",
             "speedup_vs_eager": 1.1, "images_per_s": 900.0, "mfu": 0.2, "peak": "p"},
            {"method": "mocov3+sdmp", "backbone": "vit_small", "mode": "graph", "batch": 256, "status": "ok",
             "speedup_vs_eager": 1.0, "images_per_s": 4100.0, "mfu": 0.41, "peak": "p"}]}}
    t = {x["target"]: x for x in report.evaluate_targets(out)}
    assert t["end-to-end dali >= 0.9 x synthetic"]["met"] is True
    assert t["graph >= 1.2 x eager at small batches (mocov3+sdmp, vit_small, batch 32)"]["met"] is False
    assert t["graph >= 1.2 x eager at small batches (mocov3+sdmp, vit_small, batch 256)"]["met"] is None
    assert t["aim: >= 4000 images/s per GPU, ViT-S MoCo v3 + SDMP"]["met"] is True
    assert t["aim: about 40% MFU, ViT-S MoCo v3 + SDMP"]["met"] is True


def test_budget_skips_arms_and_says_so(tmp_path):
    out = throughput.main(["--only", "e2e", "--quick", "--device", "cpu", "--budget-s", "1e-6", "--json",
                           str(tmp_path / "t.json"), "--e2e-loaders", "synthetic,torch"])
    assert [r["status"] for r in out["results"]["e2e"]] == ["skipped: past the --budget-s time budget"] * 2
    assert out["failures"] == []
