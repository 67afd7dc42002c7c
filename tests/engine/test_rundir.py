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
    assert f"{out} does not exist: starting a new run there" in capsys.readouterr().err and not out.exists()
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


def test_a_resume_refuses_a_changed_fixed_key_unless_allowed_and_records_it(tmp_path, capsys):
    from sdmp_fast.config import load_config
    from sdmp_fast.schema import to_dict
    out = RunDir(tmp_path / "r", ckpt.checkpoint_path(tmp_path / "r", 3))
    ckpt.save_atomic({"step": 3, "config": to_dict(load_config(None, ["data.batch_size=16", "run.max_steps=12"]))},
                     out.resume)
    free = load_config(None, ["data.batch_size=16", "run.max_steps=12", "run.log_every=5", "run.knn=false"])
    assert out.load_resume(free)["step"] == 3  # logging and evaluation keys change freely
    changed = load_config(None, ["data.batch_size=8", "run.max_steps=20", "run.log_every=5", "data.path=/elsewhere"])
    with pytest.raises(ConfigError, match=r"this start changes data.batch_size 16 -> 8, run.max_steps 12 -> 20, "
                                          r"which change the run's mathematics .* --allow-config-change"):
        out.load_resume(changed)
    assert not (out.path / "config_changes.jsonl").exists()
    assert out.load_resume(changed, allow_change=True)["step"] == 3
    assert not (out.path / "config_changes.jsonl").exists()  # recorded when the start writes its config
    out.write_config(changed, {})
    (line,) = (out.path / "config_changes.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["resumed_from"] == str(out.resume)
    assert record["changed"] == {"data.batch_size": {"was": 16, "now": 8}, "run.max_steps": {"was": 12, "now": 20}}
    assert "config changed with --allow-config-change: data.batch_size 16 -> 8" in capsys.readouterr().err
    assert RunDir(tmp_path / "fresh").load_resume(changed) is None  # nothing to compare with


def test_a_resume_cuts_the_metrics_written_after_its_checkpoint(tmp_path, capsys):
    out = RunDir(tmp_path / "r", resume=tmp_path / "r" / "checkpoints" / "step_000000004.pt")
    out.path.mkdir()
    for step in range(1, 7):  # steps 5 and 6 were logged after the checkpoint of step 4, then the run died
        out.log({"step": step, "epoch": step / 4})
    out.announce_resume("step", 4)
    assert [json.loads(x)["step"] for x in (out.path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert capsys.readouterr().err == f"[resume] {out.resume} at step 4\n"
    epochs = RunDir(tmp_path / "e", resume=tmp_path / "e" / "x.pt")  # the linear probe logs per epoch
    epochs.path.mkdir()
    for line in ({"epoch": 1}, {"epoch": 2}, {"epoch": 3, "final": True}):
        epochs.log(line)
    epochs.announce_resume("epoch", 2)
    assert [json.loads(x)["epoch"] for x in (epochs.path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_finished_run_is_said_to_be_complete_and_left_as_it_is(tmp_path, capsys):
    out = RunDir(tmp_path / "r", resume=tmp_path / "r" / "checkpoints" / "step_000000006.pt")
    out.path.mkdir()
    assert out.finished("step", 6, 6, "summary.json", "run") is None  # no result yet: the command finishes it
    out.write_json("summary.json", {"steps": 6, "knn": {"trained": {"top1": 50.0}}})
    assert out.finished("step", 5, 6, "summary.json", "run") is None  # not complete: it continues
    assert out.finished("step", 6, 6, "summary.json", "run") == {"steps": 6, "knn": {"trained": {"top1": 50.0}}}
    assert f"[run] {out.path} is complete (step 6 of 6): nothing to do" in capsys.readouterr().err
    assert RunDir(out.path).finished("step", 6, 6, "summary.json", "run") is None  # a fresh start is not a resume
