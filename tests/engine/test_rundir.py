"""The run directory: resume point, config.yaml, metrics.jsonl, checkpoints kept two, the stop message."""
import json

import pytest
import yaml

from sdmp_fast.config import Config
from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.engine.rundir import RunDir, resume_point
from sdmp_fast.schema import ConfigError


def test_a_folder_with_checkpoints_is_never_started_over(tmp_path, capsys):
    out = tmp_path / "run"
    assert resume_point(out, None) is None and resume_point(out, "auto") is None  # nothing there: start fresh
    assert "no valid checkpoint in" in capsys.readouterr().err and not out.exists()
    ckpt.save_atomic({"step": 1}, ckpt.checkpoint_path(out, 1))
    ckpt.save_atomic({"step": 2}, ckpt.checkpoint_path(out, 2))
    ckpt.checkpoint_path(out, 3).write_bytes(b"damaged")  # the newest that loads is taken
    with pytest.raises(ConfigError, match=f"run.out_dir '{out}' already holds checkpoints; continue it with --resume"):
        resume_point(out, None)
    assert resume_point(out, "auto") == ckpt.checkpoint_path(out, 2)
    assert resume_point(out, str(ckpt.checkpoint_path(out, 1))) == ckpt.checkpoint_path(out, 1)
    with pytest.raises(ConfigError, match="--resume /no/file.pt: no such checkpoint file"):
        resume_point(out, "/no/file.pt")
    with pytest.raises(ConfigError, match="--resume auto needs run.out_dir"):
        resume_point(out, "auto", can_search=False)


def test_open_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RunDir.open(str(tmp_path / "a")).path == tmp_path / "a"
    assert RunDir.open("", default=tmp_path / "b").path == tmp_path / "b"
    made = RunDir.open("", tag="mocov3_sdmp").path
    assert made.parent.name == "runs" and made.name.startswith("mocov3_sdmp-")
    with pytest.raises(ConfigError, match="--resume auto needs run.out_dir"):
        RunDir.open("", "auto", tag="x")


def test_files_of_a_run(tmp_path, capsys):
    out = RunDir(tmp_path / "r")
    out.write_config(Config(), {"total_steps": 4})
    text = (out.path / "config.yaml").read_text()
    head, last = text.rstrip("\n").rsplit("\n", 1)
    assert yaml.safe_load(head)["run"]["out_dir"] == "runs/default"
    assert json.loads(last) == {"resolved": {"total_steps": 4}}
    out.log({"step": 1})
    out.log({"step": 2})
    assert [json.loads(x)["step"] for x in (out.path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    for step in (1, 2, 3):
        out.save_checkpoint({"step": step}, step)
    assert [p.name for p in ckpt.list_checkpoints(out.path)] == ["step_000000002.pt", "step_000000003.pt"]
    assert json.loads(out.write_json("x.json", {"a": 1}).read_text()) == {"a": 1}
    out.report_stop("run", "step 3 of 9", "run.stop_after", checkpoint="C")
    assert capsys.readouterr().err == (f"[run] stopped after step 3 of 9 (run.stop_after); checkpoint C; continue with "
                                       f"--resume auto --out {out.path}\n")
