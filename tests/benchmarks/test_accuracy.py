"""benchmarks/accuracy.py end to end on real tiny runs (2 pretraining steps, 2 fine-tuning steps per run)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import accuracy  # noqa: E402

TINY = ["data.batch_size=8", "data.num_workers=0", "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=2",
        "run.log_every=1", "run.knn_bank=24", "run.knn_k=5", "run.checkpoint_minutes=0"]


def test_fashion_preset_table_from_real_tiny_runs(image_folder, tmp_path):
    stem = tmp_path / "acc"
    rec = accuracy.main(["--preset", "fashion-mnist", "--data", str(image_folder), "--arms", "mocov3", "mocov3+sdmp",
                         "--seeds", "0", "1", "--runs-root", str(tmp_path / "runs"), "--subset-train", "8",
                         "--subset-val", "3", "--linear-epochs", "2", "--finetune-steps", "2", "--finetune-batch", "8",
                         "--results", str(stem), "--pretrain-overrides", *TINY,
                         "--eval-overrides", "data.num_workers=0", "data.batch_size=8"])
    rows = rec["rows"]
    assert [(r["arm"], r["seed"]) for r in rows] == [("mocov3", 0), ("mocov3", 1), ("mocov3+sdmp", 0),
                                                     ("mocov3+sdmp", 1)]
    for r in rows:
        assert r["pretrain_steps"] == 2 and r["pretrain_images_per_s"] > 0
        for key in ("knn_trained", "knn_random", "linear_trained", "linear_random", "finetune_trained",
                    "finetune_random"):
            assert 0 <= r[key] <= 100, key
    md = stem.with_suffix(".md").read_text()
    assert "NOT the paper protocol" in md and "NOT the paper's 100 epochs" in md
    assert "73.2 (paper)" in md and "73.8 (paper)" in md and "paired by seed" in md
    assert json.loads(stem.with_suffix(".json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert stem.with_suffix(".png").stat().st_size > 10_000 and "](acc.png)" in md  # the bars beside the tables
    # --collect reads the finished runs (nothing is trained again) and refuses missing ones
    again = accuracy.main(["--preset", "fashion-mnist", "--data", str(image_folder), "--arms", "mocov3", "--seeds", "0",
                           "--collect", "--runs-root", str(tmp_path / "runs"), "--subset-train", "8", "--subset-val",
                           "3", "--linear-epochs", "2", "--finetune-steps", "2", "--finetune-batch", "8",
                           "--results", str(tmp_path / "acc2"), "--eval-overrides", "data.num_workers=0"])
    assert again["rows"][0]["run"] == rows[0]["run"]
    with pytest.raises(SystemExit, match="no finished run mocov3-s7"):
        accuracy.main(["--preset", "fashion-mnist", "--data", str(image_folder), "--arms", "mocov3", "--seeds", "7",
                       "--collect", "--runs-root", str(tmp_path / "runs"), "--results", str(tmp_path / "acc3")])


def test_imagenet_preset_prints_commands_and_runs_nothing(capsys, tmp_path):
    rec = accuracy.main(["--preset", "imagenet", "--data", str(tmp_path / "imagenet"), "--gpus", "4"])
    out = capsys.readouterr().out
    assert not rec["executed"] and "Nothing was run" in out
    assert ("torchrun --standalone --nproc_per_node 4 -m sdmp_fast.pretrain --config configs/mocov3_sdmp_vit_s.yaml"
            in out)
    assert len(rec["rows"]) == 8 and all(r["estimate"] for r in rec["rows"])
    with pytest.raises(SystemExit, match="Nothing was run"):
        accuracy.main(["--preset", "imagenet", "--data", str(tmp_path / "imagenet"), "--execute"])


def test_cifar_preset_table_from_real_tiny_runs(cifar_dirs, tmp_path):
    """Table 5 on the tiny CIFAR-10 and CIFAR-100 folders: 2 pretraining steps (tiny ViT), fast linear evaluation."""
    stem = tmp_path / "t5"
    common = ["--preset", "cifar", "--data-cifar10", str(cifar_dirs["cifar10"][0]), "--data-cifar100",
              str(cifar_dirs["cifar100"][0]), "--seeds", "0", "--runs-root", str(tmp_path / "runs"),
              "--pretrain-steps", "2", "--linear-fast", "--linear-epochs", "2",
              "--eval-overrides", "data.num_workers=0", "data.batch_size=8"]
    rec = accuracy.main([*common, "--results", str(stem), "--pretrain-overrides", *TINY, "model.backbone=vit_tiny_p4"])
    rows = rec["rows"]
    assert [(r["data"], r["arm"]) for r in rows] == [("cifar10", "mocov3"), ("cifar10", "mocov3+sdmp"),
                                                     ("cifar100", "mocov3"), ("cifar100", "mocov3+sdmp")]
    for r in rows:
        assert r["pretrain_steps"] == 2 and r["linear_images"] == [20, 10] and 0 <= r["linear_trained"] <= 100
        assert Path(r["run"]).name == f"{r['data']}-{'mocov3_sdmp' if 'sdmp' in r['arm'] else 'mocov3'}-r50-steps2-s0"
    md = stem.with_suffix(".md").read_text()
    assert "| MoCo v3 | R50 | 200 | 86.5 (paper) |" in md and "| + SDMP | R50 | 200 | 89.5 (paper) |" in md
    assert "68.2 (paper)" in md and "not run (i-mix is not implemented)" in md and "paired by seed" in md
    assert "REDUCED budget: pretraining 2 steps instead of 200 epochs" in md and "NOT the paper's setting" in md
    diff = rows[0]["linear_trained"] - 86.5
    assert f"| {rows[0]['linear_trained']:.2f} | {diff:+.2f} |" in md  # ours, ours - paper
    assert json.loads(stem.with_suffix(".json").read_text())["rows"] == json.loads(json.dumps(rows))
    # --collect evaluates the finished runs only (results read back), one data set is enough
    again = accuracy.main([*common[:4], *common[6:], "--collect", "--results", str(tmp_path / "t5b")])
    assert [r["run"] for r in again["rows"]] == [r["run"] for r in rows[:2]]
    assert "n/a (no --data-cifar100)" in (tmp_path / "t5b.md").read_text()


def test_cifar_preset_without_data_names_the_layout(tmp_path):
    with pytest.raises(SystemExit, match=r"needs --data-cifar10 DIR and/or --data-cifar100 DIR; .*cifar-10-batches-py/ "
                                         r"\(data_batch_1 \.\.\. data_batch_5, test_batch, batches\.meta\)"):
        accuracy.main(["--preset", "cifar"])
    with pytest.raises(SystemExit, match=r"--data-cifar100 .*: not a CIFAR-100 folder"):
        accuracy.main(["--preset", "cifar", "--data-cifar100", str(tmp_path)])
