"""python -m sdmp_fast.linear in-process: both protocols, cached and augmented views, resume, errors, configs."""
import json

import pytest
import torch

from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.eval.linear import FAST_MODE
from sdmp_fast.linear import main, run

TINY = ["data.batch_size=8", "data.num_workers=0", "run.epochs=3"]


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "augmented"])
def test_linear_cli_end_to_end(mocov3_run, tmp_path, capsys, cached):
    argv = ["--pretrained", str(mocov3_run), *TINY, "run.eval_every=2"]
    if cached:  # default output directory: RUN_DIR/linear/mocov3_cached
        argv.append("--cached-features")
        out = mocov3_run / "linear" / "mocov3_cached"
    else:
        argv += ["--out", str(tmp_path / "lin")]
        out = tmp_path / "lin"
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    res = json.loads((out / "linear.json").read_text())
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 3] and lines[-1]["final"] and "val" in lines[1]
    assert res["epochs"] == 3 and res["lr"] == pytest.approx(3.0 * 8 / 256) and res["feature_dim"] == 128
    for arm in ("trained", "random_init"):
        assert 0 <= res[arm]["top1"] <= 100 and "top5" not in res[arm]  # 3 classes
    assert "random init" in stdout and "trained" in stdout
    if cached:
        assert res["mode"] == FAST_MODE and FAST_MODE in stdout and all(r["mode"] == FAST_MODE for r in lines)
    else:
        assert "not the paper protocol" not in stdout + json.dumps(res)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_000000002.pt", "step_000000003.pt"]


def test_a_small_set_clips_the_default_batch_and_a_finished_run_stays_as_it_is(mocov3_run, tmp_path, capsys):
    out = tmp_path / "l"
    argv = ["--pretrained", str(mocov3_run), "--cached-features", "data.num_workers=0", "run.epochs=2",
            "--out", str(out)]
    assert main(argv) == 0  # the default batch (256) on 36 training images
    cap = capsys.readouterr()
    assert "[linear] data.batch_size = 256 is larger than the training set (36 images): using 36" in cap.err
    assert f"[linear] vit_tiny_p4 from mocov3 + SDMP ({mocov3_run / 'backbone.pt'})" in cap.err  # the run's backbone
    assert cap.out.count("top-5    n/a") == 2 and "nan" not in cap.out  # 3 classes
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([*argv, "--resume", "auto"]) == 0
    assert f"[linear] {out} is complete (epoch 2 of 2): nothing to do" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_linear_resume_is_exact(mocov3_run, tmp_path):
    """augmented views: 2 epochs, stop, resume to 4 = 4 epochs uninterrupted (heads, accuracy)."""
    common = ["--pretrained", str(mocov3_run), "--protocol", "dino", *TINY, "run.epochs=4"]
    full = run([*common, "--out", str(tmp_path / "full")], progress=False)
    part = run([*common, "--out", str(tmp_path / "part"), "run.stop_after=2"], progress=False)
    assert part["stopped_early"] and part["epochs_done"] == 2
    again = run([*common, "--out", str(tmp_path / "part"), "--resume", "auto"], progress=False)
    a = ckpt.load(ckpt.latest_checkpoint(tmp_path / "full"))
    b = ckpt.load(ckpt.latest_checkpoint(tmp_path / "part"))
    assert a["epoch"] == b["epoch"] == 4
    for k, v in a["heads"].items():
        assert torch.equal(v, b["heads"][k]), k
    assert full["trained"] == again["trained"] and full["random_init"] == again["random_init"]
    assert full["feature_dim"] == 4 * 128
    # a second run into the same directory without --resume is refused, nothing touched
    assert main([*common, "--out", str(tmp_path / "part")]) == 2


def _resnet_export(path):
    import timm

    from sdmp_fast.export import FORMAT
    m = timm.create_model("resnet18", num_classes=0)
    torch.save({"format": FORMAT, "model_name": "resnet18", "model_kwargs": {"num_classes": 0},
                "state_dict": m.state_dict()}, path)
    return path


@pytest.mark.parametrize("argv, message", [
    ([], "--pretrained is required"),
    (["--pretrained", "/no/such/run"], "--pretrained /no/such/run: no such run directory or export file"),
    (["--pretrained", "{run}", "probe.protocl=dino"], "unknown key 'probe.protocl'"),
    (["--pretrained", "{run}", "--loader", "dali"], "supported: torch"),
    (["--pretrained", "{run}", "--protocol", "byol"], "probe.protocol = 'byol' is not allowed"),
    (["--pretrained", "{empty}"], "the run directory has no backbone.pt"),
    (["--pretrained", "{resnet}", "--protocol", "dino"], "has none: use --protocol mocov3"),
], ids=["missing", "no_such_path", "unknown_key", "loader", "protocol", "no_export", "dino_on_resnet"])
def test_bad_input_is_a_clear_error(mocov3_run, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    subs = {"{run}": str(mocov3_run), "{empty}": str(tmp_path / "empty")}
    if "{resnet}" in argv:
        subs["{resnet}"] = str(_resnet_export(tmp_path / "r18.pt"))
    argv = [subs.get(a, a) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "x"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "x").exists()


def test_shipped_protocol_configs():
    from pathlib import Path

    from sdmp_fast.eval.linear import LinearConfig, validate
    from sdmp_fast.schema import load
    root = Path(__file__).resolve().parent.parent / "configs" / "eval"
    for name, protocol, lr, epochs in (("linear_mocov3", "mocov3", 3.0, 90), ("linear_dino", "dino", 0.001, 100)):
        cfg = load(LinearConfig, root / f"{name}.yaml")
        validate(cfg)
        assert (cfg.probe.protocol, cfg.optim.lr, cfg.run.epochs, cfg.data.batch_size) == (protocol, lr, epochs, 1024)
        assert not cfg.probe.cached_features and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 0


def test_class_subset_and_label_fraction(mocov3_run, tmp_path, capsys):
    """data.class_subset restricts train and val (labels renumbered); --label-fraction the labelled train images."""
    subset = tmp_path / "classes.txt"
    subset.write_text("class_002\nclass_001\n")
    res = run(["--pretrained", str(mocov3_run), "--cached-features", "--out", str(tmp_path / "lin"), *TINY,
               "run.epochs=1", f"data.class_subset={subset}", "--label-fraction", "0.5"], progress=False)
    assert res["train_images"] == 12 and res["val_images"] == 8  # 2 classes: 6 of 12 labelled each, 4 val each
    assert res["labels"] == {"fraction": 0.5, "seed": 0, "images": 12, "of": 24, "per_class_min": 6,
                             "per_class_max": 6, "classes_without_labels": 0}
    assert "2 classes of classes.txt" in res["data"] and "labels: 50 % (data.label_seed 0)" in capsys.readouterr().out
