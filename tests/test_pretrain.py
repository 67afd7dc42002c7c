"""In-process CLI runs of python -m sdmp_fast.pretrain (main(argv)): 2-step runs, resume, errors."""
import json
from pathlib import Path

import pytest
import torch

from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.export import load_backbone
from sdmp_fast.pretrain import main, run

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _args(data, out, *extra):
    return ["--config", SMOKE, "--data", str(data), "--out", str(out), *extra]


@pytest.mark.parametrize("extra", [
    ["sdmp.enabled=false"],
    ["sdmp.enabled=true"],
    ["sdmp.enabled=true", "sdmp.variant=extra", "sdmp.ops=resizemix"],
    ["--config", str(ROOT / "configs" / "mocov3_sdmp_r50.yaml"), "--config", SMOKE, "data.image_size=32"],
], ids=["mocov3", "mocov3_sdmp", "mocov3_sdmp_extra", "r50_sdmp"])
def test_two_step_runs(image_folder, tmp_path, extra):
    if extra[0] == "--config":  # R50: its recipe, then the smoke sizes (argparse keeps the last --config)
        cfg_args = ["--config", extra[1], "data.batch_size=8", "data.num_workers=0", "method.hidden_dim=64",
                    "method.out_dim=32", "run.max_steps=2", "run.log_every=1", "run.knn=false", "data.image_size=32",
                    "--data", str(image_folder), "--out", str(tmp_path / "run")]
        summary = run(cfg_args, progress=False)
    else:
        summary = run(_args(image_folder, tmp_path / "run", *extra), progress=False)
    assert summary["steps"] == 2
    out = Path(summary["out_dir"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(r["loss"] == r["loss"] for r in lines)
    assert (out / "config.yaml").is_file() and ckpt.list_checkpoints(out)
    model = load_backbone(out / "backbone.pt")
    assert model(torch.randn(2, 3, 32, 32)).shape[0] == 2


def test_default_data_and_knn_report(image_folder, tmp_path):
    summary = run(_args(image_folder, tmp_path / "k", "run.knn=true", "run.knn_bank=24", "run.knn_k=5"), progress=False)
    knn = json.loads((tmp_path / "k" / "knn.json").read_text())
    assert knn == summary["knn"]
    assert knn["bank"] == 24 and knn["queries"] == 12 and "val" in knn["query_set"]
    for arm in ("trained", "random_init"):
        assert 0 <= knn[arm]["top1"] <= 100


def test_resume_is_exact(image_folder, tmp_path):
    """stop after 3 steps, resume: the parameters after 6 steps equal those of an uninterrupted run."""
    common = ["run.max_steps=6", "run.knn=false"]  # 36 images / batch 8 = 4 steps per epoch: crosses an epoch end
    run(_args(image_folder, tmp_path / "full", *common), progress=False)
    s1 = run(_args(image_folder, tmp_path / "part", *common, "run.stop_after=3"), progress=False)
    assert s1["steps"] == 3 and "export" not in s1
    s2 = run(_args(image_folder, tmp_path / "part", *common, "--resume", "auto"), progress=False)
    assert s2["steps"] == 6
    full = ckpt.load(ckpt.latest_checkpoint(tmp_path / "full"))
    part = ckpt.load(ckpt.latest_checkpoint(tmp_path / "part"))
    assert full["step"] == part["step"] == 6
    for k, v in full["method"].items():
        assert torch.equal(v, part["method"][k]), k
    # and a resumed-from-scratch attempt on a run directory with checkpoints is refused, nothing touched
    before = sorted(p.name for p in ckpt.list_checkpoints(tmp_path / "part"))
    assert main(_args(image_folder, tmp_path / "part", *common)) == 2
    assert sorted(p.name for p in ckpt.list_checkpoints(tmp_path / "part")) == before


def test_print_config(capsys):
    assert main(["--print-config", "--loader", "synthetic", "optim.lr=0.01"]) == 0
    out = capsys.readouterr().out
    assert "loader: synthetic" in out and "lr: 0.01" in out


@pytest.mark.parametrize("argv, message", [
    (["--data", "/no/such/folder"], "data.path '/no/such/folder' does not exist"),
    (["optim.lrr=1"], "unknown key 'optim.lrr'"),
    (["--loader", "nope"], "data.loader = 'nope': choose one of"),
    (["model.backbone=vit_huge"], "model.backbone = 'vit_huge': choose one of"),
    (["data.batch_size=abc"], "data.batch_size: expected an integer"),
    (["data.image_size=30"], "data.image_size = 30 is not a multiple of the patch size 4 of model.backbone "
                             "vit_tiny_p4 (its last 2 pixel rows and columns would never be seen): use 28 or 32"),
    (["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.local_size=18"],
     "data.local_size = 18 is not a multiple of the patch size 4"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "x").exists()  # nothing written


def test_synthetic_loader_run_with_overrides_between_flags(tmp_path, capsys):
    """A folderless loader (no data read, no k-NN report); overrides may stand before, between and after flags."""
    summary = run(["--loader", "synthetic", "run.max_steps=2", "--out", str(tmp_path / "s"), "run.knn=false",
                   "--config", SMOKE, "run.log_every=1"], progress=False)
    assert summary["steps"] == 2 and "knn" not in summary
    resolved = json.loads((tmp_path / "s" / "config.yaml").read_text().strip().splitlines()[-1])["resolved"]
    assert resolved["data"] == "synthetic"
    # --resume auto in a folder without checkpoints starts from scratch, and says so
    assert main(["--config", SMOKE, "--loader", "synthetic", "--out", str(tmp_path / "t"), "--resume", "auto"]) == 0
    assert f"{tmp_path / 't'} does not exist: starting a new run there" in capsys.readouterr().err


def test_dump_views_writes_a_png_grid(image_folder, tmp_path):
    from PIL import Image
    run(_args(image_folder, tmp_path / "v", "--dump-views", "4", "run.max_steps=1"), progress=False)
    img = Image.open(tmp_path / "v" / "views.png")
    assert img.size[0] > 4 * 32 and img.size[1] > 4 * 32
    assert main(_args(image_folder, tmp_path / "w", "--dump-views", "4", "sdmp.enabled=false")) == 2


DINO_TINY = ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.local_crops=2", "data.local_size=16",
             "method.dino_out_dim=128", "method.dino_hidden_dim=64", "method.dino_bottleneck_dim=32",
             "optim.clip_grad=3.0", "optim.clip_mode=per_param", "optim.weight_decay_end=0.4"]


@pytest.mark.parametrize("extra", [
    ["sdmp.enabled=false", "run.knn=true", "run.knn_bank=24", "run.knn_k=5"],
    ["sdmp.enabled=true", "--dump-views", "3"],
    ["sdmp.enabled=true", "sdmp.mix_global_student=true", "data.local_crops=0"],
], ids=["dino", "dino_sdmp", "dino_sdmp_2x0"])
def test_dino_two_step_runs(image_folder, tmp_path, extra):
    summary = run(_args(image_folder, tmp_path / "run", *DINO_TINY, *extra), progress=False)
    assert summary["steps"] == 2
    out = Path(summary["out_dir"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(r["loss"] == r["loss"] for r in lines)
    # 36 images / batch 8 = 4 steps per epoch: the teacher temperature ramps over 30 * 4 steps; wd 0.1 -> 0.4 over 2
    assert [r["teacher_temp"] for r in lines] == pytest.approx([0.04, 0.04 + 0.03 / 120])
    assert [r["weight_decay"] for r in lines] == pytest.approx([0.1, 0.25])
    if "sdmp.enabled=true" in extra:
        assert {"dino", "source", "mix", "lam_eff"} <= set(lines[-1])
    state = ckpt.load(ckpt.latest_checkpoint(out))
    assert "center" in state["method"] and len(state["optimizer"]["param_groups"]) == 2
    model = load_backbone(out / "backbone.pt")  # the teacher's backbone
    assert torch.equal(model.pos_embed, state["method"]["teacher.backbone.pos_embed"])
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 128)  # local-crop size: interpolated pos-embed
    if "run.knn=true" in extra:  # the k-NN report runs on the exported (teacher) backbone
        assert 0 <= summary["knn"]["trained"]["top1"] <= 100 and summary["knn"]["queries"] == 12
    if "--dump-views" in extra:
        from PIL import Image
        img = Image.open(out / "views.png")  # 2 globals, the teacher's mixed global, 1 clean + 1 mixed local
        assert img.size[0] > 5 * 32 and img.size[1] > 3 * 32


def test_dino_sdmp_resume_is_exact(image_folder, tmp_path):
    """DINO + SDMP stopped after 3 steps and resumed: the method state (teacher, centre) equals an uninterrupted run's."""
    common = [*DINO_TINY, "sdmp.enabled=true", "method.freeze_last_layer=0.5", "run.max_steps=6", "run.knn=false"]
    run(_args(image_folder, tmp_path / "full", *common), progress=False)
    run(_args(image_folder, tmp_path / "part", *common, "run.stop_after=3"), progress=False)
    run(_args(image_folder, tmp_path / "part", *common, "--resume", "auto"), progress=False)
    full = ckpt.load(ckpt.latest_checkpoint(tmp_path / "full"))
    part = ckpt.load(ckpt.latest_checkpoint(tmp_path / "part"))
    assert full["step"] == part["step"] == 6
    for k, v in full["method"].items():
        assert torch.equal(v, part["method"][k]), k
    # the export says how it was trained and rebuilds the DINO-resampling ViT (docs/method.md, DINO)
    export = torch.load(tmp_path / "full" / "backbone.pt", weights_only=False)
    assert export["model_name"] == "vit_dino_resample"
    rec = export["config"]
    assert (rec["data"]["interpolation"], rec["data"]["eval_interpolation"], rec["model"]["pos_resample"]) == (
        "bicubic", "bicubic", "dino")


def test_cifar_folder_two_step_run(cifar_dirs, tmp_path):
    """The CIFAR-10 config on a tiny cifar-10-batches-py folder (tiny ViT instead of its ResNet-50), k-NN on its val."""
    out = tmp_path / "c"
    assert main(["--config", str(ROOT / "configs" / "cifar10_mocov3_sdmp_r50.yaml"), "--data",
                 str(cifar_dirs["cifar10"][0]), "--out", str(out), "model.backbone=vit_tiny_p4", "data.batch_size=8",
                 "data.num_workers=0", "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=2",
                 "run.log_every=1", "run.checkpoint_minutes=0", "run.knn_bank=16", "run.knn_k=5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["knn"]["queries"] == 10  # the 10 images of test_batch
    resolved = json.loads((out / "config.yaml").read_text().strip().splitlines()[-1])["resolved"]
    assert resolved["data"] == "cifar10" and resolved["views"] == [32, 32] and resolved["steps_per_epoch"] == 2
    assert load_backbone(out / "backbone.pt")(torch.randn(2, 3, 32, 32)).shape[0] == 2


def test_class_subset_applies_to_the_training_split(image_folder, tmp_path):
    subset = tmp_path / "classes.txt"
    subset.write_text("class_001\n")
    run(_args(image_folder, tmp_path / "r", f"data.class_subset={subset}", "run.max_steps=1"), progress=False)
    resolved = json.loads((tmp_path / "r" / "config.yaml").read_text().strip().splitlines()[-1])["resolved"]
    assert resolved["steps_per_epoch"] == 12 // 8  # one class of 12 images, batch 8 (36 // 8 = 4 without the subset)


# ----------------------------------------------------------------------------- resume and the run's record

def test_resume_refuses_a_changed_config_unless_allowed(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["--config", SMOKE, "--loader", "synthetic", "--out", str(out), "run.max_steps=4"]
    run([*base, "run.stop_after=2"], progress=False)
    before = (out / "config.yaml").read_text()
    assert main([*base, "--resume", "auto", "data.batch_size=4", "run.max_steps=6", "run.log_every=2"]) == 2
    err = capsys.readouterr().err
    assert "this start changes data.batch_size 8 -> 4, run.max_steps 4 -> 6, which change" in err
    assert "--allow-config-change" in err and (out / "config.yaml").read_text() == before  # nothing rewritten
    summary = run([*base, "run.max_steps=6", "--resume", "auto", "--allow-config-change", "run.knn=true"],
                  progress=False)
    assert summary["steps"] == 6 and (out / "backbone.pt").is_file()
    changes = [json.loads(x) for x in (out / "config_changes.jsonl").read_text().splitlines()]
    assert [c["changed"] for c in changes] == [{"run.max_steps": {"was": 4, "now": 6}}]
    assert "max_steps: 6" in (out / "config.yaml").read_text()
    # a folderless loader has no k-NN report, and says so (run.knn is free: no question on resume)
    assert summary["knn_skipped"] == "loader synthetic reads no image folder"
    assert "no k-NN report (run.knn): loader synthetic reads no image folder" in capsys.readouterr().err


def test_resuming_a_finished_run_leaves_its_record(mocov3_run, image_folder, session_cache, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(mocov3_run, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    summary = run(["--config", SMOKE, "--data", str(image_folder), "--out", str(out), f"data.cache_dir={session_cache}",
                   "--resume", "auto"], progress=False)
    assert summary == json.loads((out / "summary.json").read_text()) and summary["knn"]["bank"] == 24
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert f"[run] {out} is complete (step 2 of 2): nothing to do" in capsys.readouterr().err


def test_metrics_keep_one_line_per_step_across_a_resume(image_folder, tmp_path, monkeypatch):
    """A run dies after logging steps past its last checkpoint: the resumed run cuts them. (The folder holds a file
    that is not an image: data.skip_corrupt leaves it out, and summary.json counts it.)"""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    (data / "train" / "class_000" / "notes.txt").write_text("not an image")
    args = ["--config", SMOKE, "--data", str(data), "--out", str(tmp_path / "r"), "run.max_steps=6",
            "data.skip_corrupt=true"]  # 36 images / batch 8: a checkpoint at step 4 (the epoch end)
    monkeypatch.setenv("SDMP_FAULT", "nan@6")  # the run stops at step 6 before logging it; 5 is logged
    assert main(args) == 2
    monkeypatch.delenv("SDMP_FAULT")
    summary = run([*args, "--resume", "auto"], progress=False)
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert summary["skipped_images"] == {"train": 1, "val": 0}
