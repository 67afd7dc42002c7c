"""python -m sdmp_fast.knn (in-process) on a toy set: it reproduces pretraining's own k-NN report."""
import json

from sdmp_fast.knn import main, run


def test_knn_command_reproduces_the_pretraining_report(mocov3_run, tmp_path, capsys):
    assert main(["--pretrained", str(mocov3_run), "--out", str(tmp_path / "knn"), "knn.bank=24", "knn.k=5",
                 "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "knn" / "knn.json").read_text())
    at_pretraining = json.loads((mocov3_run / "knn.json").read_text())
    # same bank, queries, trained weights and random initialisation as pretraining's report
    for key in ("k", "bank", "queries", "query_set", "trained", "random_init"):
        assert report[key] == at_pretraining[key], key
    assert "pretraining's initialisation" in report["random_init_how"]
    assert "random init" in out and "k-NN (k=5" in out
    assert out.count("top-5    n/a") == 2 and "nan" not in out  # 3 classes: no top-5
    assert json.loads((tmp_path / "knn" / "metrics.jsonl").read_text().splitlines()[-1])["trained"] == report["trained"]


def test_knn_command_defaults_and_errors(mocov3_run, tmp_path, capsys):
    report = run(["--pretrained", str(mocov3_run / "backbone.pt"), "knn.bank=30", "knn.queries=6", "knn.k=3",
                  "data.num_workers=0"])
    assert report["bank"] == 30 and report["queries"] == 6
    assert (mocov3_run / "knn" / "knn.json").is_file()  # default output: RUN_DIR/knn
    assert main(["--pretrained", str(mocov3_run), "knn.kk=3", "--out", str(tmp_path / "x")]) == 2
    assert "unknown key 'knn.kk'" in capsys.readouterr().err
    assert main(["--pretrained", str(tmp_path / "nope")]) == 2
    assert "no such run directory or export file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_file_that_is_no_export_is_one_clear_line(mocov3_run, tmp_path, capsys):
    from sdmp_fast.engine import checkpoint as ckpt
    log = tmp_path / "int.log"
    log.write_text("step 3 loss 1.2\n")
    assert main(["--pretrained", str(log)]) == 2
    assert capsys.readouterr().err == (f"error: --pretrained: {log}: not a file torch can read (UnpicklingError); "
                                       "expected an sdmp_fast backbone export (RUN_DIR/backbone.pt, written at the end "
                                       "of pretraining)\n")
    assert main(["--pretrained", str(ckpt.latest_checkpoint(mocov3_run))]) == 2
    assert "a training checkpoint, not an export; pass the run directory" in capsys.readouterr().err
