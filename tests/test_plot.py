"""python -m sdmp_fast.plot: reading run directories, seed groups, the figure's panels, lines, bands and bars."""
import json
import sys

import numpy as np
import pytest

from sdmp_fast.config import load_config
from sdmp_fast.engine.rundir import RunDir
from sdmp_fast.plot import bar_figure, draw, group_runs, main, read_run, run
from sdmp_fast.registry import MissingBackend


def fake_run(root, name, overrides, losses, knn=None):
    """A run directory as pretraining writes it: config.yaml, metrics.jsonl (a line per step), knn.json."""
    out = RunDir(root / name)
    out.write_config(load_config(None, overrides), {"total_steps": len(losses)})
    for step, loss in enumerate(losses, 1):
        out.log({"step": step, "loss": loss, "clean": loss + 1, "mix": loss + 2, "lr": 0.1 * step, "momentum": 0.99,
                 "images_per_s": 100.0, "data_wait_frac": 0.25, "time": 1e9 + step, "lam_eff": 0.5})
    if knn is not None:
        out.write_json("knn.json", {"trained": {"top1": knn, "top5": 99.0}, "random_init": {"top1": 10.0}})
    return out.path


def test_seeds_are_one_group_drawn_as_mean_with_a_band(tmp_path):
    runs = [fake_run(tmp_path, "sdmp0", ["run.seed=0", "run.log_every=5"], [4.0, 3.0, 2.0], knn=70.0),
            fake_run(tmp_path, "sdmp1", ["run.seed=1", "run.tensorboard=true"], [6.0, 5.0, 4.0], knn=72.0),
            fake_run(tmp_path, "plain", ["sdmp.enabled=false"], [5.0, 4.5, 4.0])]
    groups = group_runs([read_run(r) for r in runs])
    assert [(label, len(rs)) for label, rs in groups] == [("mocov3 + SDMP, 2 seeds", 2), ("mocov3, seed 0", 1)]
    fig = draw(groups)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(axes) == {"loss", "loss terms", "images/s", "data wait (% of time)", "lr", "momentum",
                         "k-NN top-1 (%), end of run"}
    loss = {line.get_label(): line for line in axes["loss"].get_lines()}
    assert set(loss) == {"mocov3 + SDMP, 2 seeds", "mocov3, seed 0"}
    assert list(loss["mocov3 + SDMP, 2 seeds"].get_ydata()) == [5.0, 4.0, 3.0]  # the mean over seeds
    (band,) = axes["loss"].collections  # the seed band: mean +- std, for the group with seeds only
    ys = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(ys.max(), 5.0 + np.std([4.0, 6.0], ddof=1)) and np.isclose(ys.min(), 3.0 - np.std([2.0, 4.0], ddof=1))
    terms = {line.get_label() for line in axes["loss terms"].get_lines()}
    assert terms == {f"{g}: {k}" for g in ("mocov3 + SDMP, 2 seeds", "mocov3, seed 0") for k in ("clean", "mix")}
    assert list(axes["data wait (% of time)"].get_lines()[0].get_ydata()) == [25.0] * 3
    bars = axes["k-NN top-1 (%), end of run"]
    heights = sorted(p.get_height() for p in bars.patches)
    assert heights == [10.0, 71.0] and [t.get_text() for t in bars.get_xticklabels()] == ["mocov3 + SDMP, 2 seeds"]


def test_groups_of_one_method_are_named_by_what_differs(tmp_path):
    runs = [fake_run(tmp_path, "a", ["optim.lr=0.001"], [1.0]), fake_run(tmp_path, "b", ["optim.lr=0.002"], [1.0])]
    labels = [label for label, _ in group_runs([read_run(r) for r in runs])]
    assert labels == ["mocov3 + SDMP (optim.lr=0.001), seed 0", "mocov3 + SDMP (optim.lr=0.002), seed 0"]


def test_the_command_writes_a_png_of_a_real_run(mocov3_run, tmp_path, capsys):
    from PIL import Image
    plain = fake_run(tmp_path, "plain", ["sdmp.enabled=false"], [5.0, 4.0])
    assert main([str(mocov3_run), str(plain), "--out", str(tmp_path / "c.png")]) == 0
    assert Image.open(tmp_path / "c.png").size[0] > 1000
    assert "wrote" in capsys.readouterr().err and not list(tmp_path.glob("*.tmp"))
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "d.png")]) == 2
    assert "nothing: no metrics.jsonl (not a pretraining run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    assert main([str(tmp_path / "empty")]) == 2 and "empty (no step was logged yet)" in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists()


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(MissingBackend, match=r"pip install -e '\.\[plot\]'"):
        bar_figure({"p": {"g": {"s": [1.0]}}})
    plain = fake_run(tmp_path, "plain", [], [5.0])
    with pytest.raises(MissingBackend):
        run([str(plain)])
    assert main([str(plain), "--out", str(tmp_path / "x.png")]) == 2
    assert "drawing PNGs needs matplotlib" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_bar_figure_draws_each_series_with_its_spread():
    fig = bar_figure({"linear": {"mocov3": {"trained": [70.0, 72.0], "random init": [60.0]}},
                      "k-NN": {"mocov3": {"trained": [65.0]}}}, {"linear": "top-1"})
    lin, knn = fig.axes
    assert lin.get_title() == "linear" and lin.get_ylabel() == "top-1" and knn.get_title() == "k-NN"
    assert sorted(p.get_height() for p in lin.patches) == [60.0, 71.0]
    err = [c for c in lin.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    spans = sorted(np.ptp(seg[:, 1]) for c in err for col in c.errorbar.lines[2] for seg in col.get_segments())
    assert np.isclose(spans[-1], 2 * np.std([70.0, 72.0], ddof=1))  # one std either side of the mean
    assert json.dumps([t.get_text() for t in lin.get_legend().get_texts()]) == '["trained", "random init"]'
