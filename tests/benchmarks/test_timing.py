"""Where the benchmarks write (benchmarks/timing.py's result_path): under runs/ unless a path is given, so running
every benchmark with its defaults leaves ``git status`` as it was; a result meant for the repository is a
deliberate --json / --results."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import accuracy, knn_seeds, soak, throughput  # noqa: E402
from benchmarks.presets import fashion_mnist  # noqa: E402


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def test_every_benchmark_with_its_defaults_writes_under_runs_and_leaves_git_status_clean(tmp_path, monkeypatch):
    before = _git_status()
    monkeypatch.chdir(tmp_path)  # runs/ of the folder a user runs from (the repository root: ignored by git)
    results = tmp_path / "runs" / "benchmarks"
    # throughput: every section left out by the budget; the record is still written
    throughput.main(["--only", "e2e", "--quick", "--device", "cpu", "--budget-s", "1e-6"])
    assert json.loads((results / "throughput-cpu.json").read_text())["argv"][:2] == ["--only", "e2e"]
    # soak: the synthetic loader for a moment
    soak.main(["--minutes", "0.001", "--every", "0.02", "--loaders", "synthetic", "--device", "cpu",
               "--config", str(ROOT / "configs" / "smoke.yaml")])
    assert json.loads((results / "soak-cpu.json").read_text())["results"][0]["loader"] == "synthetic"
    # knn_seeds: collect two finished (recorded) runs
    for arm in ("mocov3", "mocov3_sdmp"):
        run = tmp_path / "runs" / "knn_seeds" / f"{arm}-s0"
        run.mkdir(parents=True)
        (run / "knn.json").write_text(json.dumps({"trained": {"top1": 60.0}, "random_init": {"top1": 30.0}}))
        (run / "summary.json").write_text(json.dumps({"seconds": 1.0, "images_per_s": 9.0, "steps": 2}))
    knn_seeds.main(["--collect", "--seeds", "0"])
    assert (results / "knn_seeds.json").is_file() and (results / "knn_seeds.md").is_file()
    # accuracy: its output path (the preset's runs are the other tests' concern)
    monkeypatch.setattr(fashion_mnist, "run", lambda args: {"rows": []})
    monkeypatch.setattr(fashion_mnist, "tables", lambda res, args, device: ("| table |\n", {}))
    monkeypatch.setattr(fashion_mnist, "labels", lambda args, res: {})
    accuracy.main(["--preset", "fashion-mnist", "--collect"])
    assert (results / "accuracy_fashion_mnist.json").is_file() and (results / "accuracy_fashion_mnist.md").is_file()
    assert _git_status() == before
