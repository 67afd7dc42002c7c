"""benchmarks/throughput.py --only input (the --profile-input table per loader) and the PNG beside the report."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import throughput  # noqa: E402
from benchmarks.sections import report  # noqa: E402


def test_input_section_rows_report_and_figure(tmp_path):
    out = throughput.main(["--only", "input", "--quick", "--device", "cpu", "--json", str(tmp_path / "t.json"),
                           "--report", str(tmp_path / "t.md"), "--e2e-loaders", "synthetic,torch,nosuch",
                           "--e2e-batch", "8", "--e2e-steps", "1", "--e2e-workers", "0"])
    rows = {r["loader"]: r for r in out["results"]["input"]}
    assert list(rows) == ["torch", "nosuch"]  # synthetic is the compute ceiling itself
    torch_row = rows["torch"]
    assert torch_row["status"] == "ok" and torch_row["bound"] in ("compute-bound", "input-bound", "balanced")
    assert min(torch_row[f"{arm}_images_per_s"] for arm in ("compute", "input", "real")) > 0
    assert torch_row["decode_ms"] > 0 and torch_row["augment_ms"] > 0 and 0 <= torch_row["real_data_wait_frac"] <= 1
    assert rows["nosuch"]["status"].startswith("unknown loader 'nosuch'")
    md = (tmp_path / "t.md").read_text()
    assert "## Input profile" in md and torch_row["verdict"] in md
    assert "](t.png)" in md and (tmp_path / "t.png").stat().st_size > 10_000


def test_report_figure_panels_and_without_matplotlib(tmp_path, monkeypatch):
    res = {"e2e": [{"loader": "synthetic", "status": "ok", "images_per_s": 100.0},
                   {"loader": "dali", "status": "ok", "images_per_s": 80.0},
                   {"loader": "ffcv", "status": "skipped: ffcv is not installed"}],
           "input": [{"loader": "dali", "status": "ok", "bound": "input-bound", "compute_images_per_s": 100.0,
                      "input_images_per_s": 50.0, "real_images_per_s": 48.0}]}
    panels = report.figure_panels(res)
    assert panels["end-to-end images/s (synthetic = compute only)"] == {"synthetic": {"images/s": [100.0]},
                                                                        "dali": {"images/s": [80.0]}}
    assert panels["input profile images/s"] == {"dali: input-bound": {"compute": [100.0], "input": [50.0],
                                                                      "real": [48.0]}}
    out = {"env": {"device": "cpu", "date": "2026-12-03"}, "results": res}
    assert report.write_figure(out, tmp_path / "r.png") == "![throughput, cpu, 2026-12-03](r.png)"
    assert (tmp_path / "r.png").is_file()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    line = report.write_figure(out, tmp_path / "s.png")
    assert line.startswith("No figure: drawing PNGs needs matplotlib") and "[plot]" in line
    assert not (tmp_path / "s.png").exists()
    assert report.write_figure({**out, "results": {}}, tmp_path / "t.png").startswith("No figure")
