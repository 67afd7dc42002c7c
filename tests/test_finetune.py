"""Fine-tuning (python -m sdmp_fast.finetune, in-process): 2 steps from MoCo v3 and DINO exports, resume, errors."""
import json

import pytest
import torch

from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.export import load_export
from sdmp_fast.eval.finetune import build_classifier
from sdmp_fast.finetune import main, run

TINY = ["data.batch_size=8", "data.num_workers=0", "run.log_every=1"]


@pytest.mark.parametrize("method", ["mocov3", "dino"])
def test_two_steps_from_each_method(request, tmp_path, method):
    run_dir = request.getfixturevalue(f"{method}_run")
    res = run(["--pretrained", str(run_dir), "--out", str(tmp_path / "ft"), *TINY, "run.max_steps=2",
               "optim.warmup_epochs=0.5"], progress=False)  # 4 steps per epoch: 1 warm-up step
    assert res["steps"] == 2 and res["total_steps"] == 2
    lines = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 2] and lines[-1]["final"]
    for r in lines[:2]:
        assert set(r["loss"]) == {"trained", "random_init"} and all(v == v for v in r["loss"].values())
    assert lines[0]["lr"] == pytest.approx(1e-6)  # warm-up starts at optim.warmup_lr
    for arm in ("trained", "random_init"):
        assert 0 <= res[arm]["top1"] <= 100
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["trained"] == res["trained"]
    state = ckpt.load(ckpt.latest_checkpoint(tmp_path / "ft"))
    assert state["step"] == 2 and "arms.trained.head.weight" in state["model"]


def test_classifier_is_the_export_with_drop_path_and_a_new_head(dino_run):
    d = load_export(dino_run / "backbone.pt")
    model = build_classifier(d, d["state_dict"], num_classes=3, drop_path=0.1)
    assert model.head.out_features == 3
    assert max(getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks) == pytest.approx(0.1)  # linear in depth
    assert torch.equal(model.pos_embed, d["state_dict"]["pos_embed"])
    assert model.patch_embed.proj.weight.requires_grad  # fine-tuning trains MoCo v3's frozen patch projection too


def test_resume_continues_to_the_end(mocov3_run, tmp_path):
    common = ["--pretrained", str(mocov3_run), "--out", str(tmp_path / "ft"), *TINY, "run.max_steps=3",
              "run.random_init=false"]
    part = run([*common, "run.stop_after=2"], progress=False)
    assert part["stopped_early"] and part["steps"] == 2 and "trained" not in part
    res = run([*common, "--resume", "auto"], progress=False)
    assert res["steps"] == 3 and "random_init" not in res
    assert [json.loads(x)["step"] for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 3]


@pytest.mark.parametrize("argv, message", [
    ([], "--pretrained is required"),
    (["--pretrained", "{run}", "optim.lrr=1"], "unknown key 'optim.lrr'"),
    (["--pretrained", "{run}", "data.batch_size=7"], "even per-rank batch"),
    (["--pretrained", "{run}", "--loader", "nvjpeg"], "supported: torch"),
    (["--pretrained", "{run}", "--label-fraction", "0"], "data.label_fraction = 0.0: must be in (0, 1]"),
    (["--pretrained", "{run}", "--label-fraction", "0.5", "--label-subset", "x.txt"], "set one of them"),
    (["--pretrained", "{run}", "--label-subset", "/no/labels.txt"], "label subset '/no/labels.txt': no such file"),
    (["--pretrained", "{run}", "--ood-val", "{imgs}"], "2 class folder(s) that are not training classes: train, val"),
], ids=["missing", "unknown_key", "odd_batch", "loader", "fraction", "both", "subset_file", "ood_classes"])
def test_bad_input_is_a_clear_error(mocov3_run, image_folder, tmp_path, capsys, argv, message):
    argv = [{"{run}": str(mocov3_run), "{imgs}": str(image_folder)}.get(a, a) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "x"), "data.num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "x").exists()


def test_rand_augment_posterize_to_zero_bits_is_a_black_image():
    """timm's PosterizeIncreasing reaches 0 bits at magnitude 10 (m9, mstd 0.5); Pillow 13 raises on it."""
    from PIL import Image
    from timm.data import create_transform

    from sdmp_fast.eval.finetune import fix_posterize
    t = fix_posterize(create_transform(32, is_training=True, auto_augment="rand-m9-mstd0.5-inc1"))
    ops = [op for tr in t.transforms for op in getattr(tr, "ops", ()) if "Posterize" in op.name]
    assert ops
    img = Image.new("RGB", (32, 32), (200, 100, 50))
    ops[0].magnitude, ops[0].magnitude_std, ops[0].prob = 10, 0, 1.0
    assert ops[0](img).getextrema() == ((0, 0), (0, 0), (0, 0))
    ops[0].magnitude = 5  # 2 bits kept
    assert ops[0](img).getpixel((0, 0)) == (192, 64, 0)


def test_shipped_deit_config():
    from pathlib import Path

    from sdmp_fast.eval.finetune import FinetuneConfig, validate
    from sdmp_fast.schema import load
    cfg = load(FinetuneConfig, Path(__file__).resolve().parent.parent / "configs" / "eval" / "finetune_deit.yaml")
    validate(cfg)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_epochs, cfg.run.epochs) == (5e-4, 0.05, 5, 100)
    assert (cfg.aug.mixup, cfg.aug.cutmix, cfg.aug.re_prob, cfg.aug.smoothing, cfg.model.drop_path) == (0.8, 1.0, 0.25, 0.1, 0.1)
    assert cfg.aug.rand_augment == "rand-m9-mstd0.5-inc1" and cfg.data.batch_size == 1024


def test_label_fraction_and_ood_val(mocov3_run, image_folder, tmp_path):
    """Table 3's label fraction (recorded in the results) and Table 4's evaluation on a folder of some of the classes."""
    ood = tmp_path / "ood"
    ood.mkdir()
    for c in ("class_001", "class_002"):
        (ood / c).symlink_to(image_folder / "val" / c)
    res = run(["--pretrained", str(mocov3_run), "--out", str(tmp_path / "ft"), *TINY, "run.max_steps=1",
               "run.random_init=false", "--label-fraction", "0.25", "data.label_seed=3", "--ood-val", str(ood)],
              progress=False)
    assert res["labels"] == {"fraction": 0.25, "seed": 3, "images": 9, "of": 36, "per_class_min": 3,
                             "per_class_max": 3, "classes_without_labels": 0}
    assert res["train_images"] == 9 and res["val_images"] == 12
    assert res["ood"][str(ood)]["classes"] == 2 and res["ood"][str(ood)]["images"] == 8
    assert 0 <= res["ood"][str(ood)]["trained"]["top1"] <= 100
    saved = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert saved["labels"] == res["labels"] and saved["ood"] == res["ood"]


def test_ood_evaluation_restricts_the_logits(image_folder, tmp_path):
    """Logits that always rank class 0 first, then class 2: on a folder of classes 1 and 2, only the logits of those
    two count, so every class_002 image is right and every class_001 image wrong (without the restriction: none)."""
    from sdmp_fast.eval.config import EvalData
    from sdmp_fast.eval.finetune import Arms, evaluate, ood_split

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[5.0, 0.0, 1.0]]).expand(x.shape[0], 3)

    ood = tmp_path / "ood"
    ood.mkdir()
    for c in ("class_001", "class_002"):
        (ood / c).symlink_to(image_folder / "val" / c)
    data = EvalData(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_workers=0, batch_size=8,
                    eval_interpolation="bilinear")
    split, columns = ood_split(str(ood), ("class_000", "class_001", "class_002"), data)
    assert columns == [1, 2]
    arms = Arms({"trained": Fixed()})
    assert evaluate(arms, split, data, torch.device("cpu"), torch.float32, columns)["trained"]["top1"] == 50.0
    from sdmp_fast.data.folders import Split
    as_training = Split(split.root, ("class_000", "class_001", "class_002"),
                        tuple((p, columns[lab]) for p, lab in split.samples))  # training-class labels, all logits
    assert evaluate(arms, as_training, data, torch.device("cpu"), torch.float32)["trained"]["top1"] == 0.0


def test_overrides_after_a_multi_value_flag_stay_overrides():
    """``--ood-val DIR ...`` takes the folders up to the next flag or ``section.key=value``."""
    from sdmp_fast.finetune import parse_config
    args, cfg = parse_config(["run.seed=2", "--pretrained", "RUN", "--ood-val", "A", "B", "run.stop_after=1",
                              "--out", "o", "run.max_steps=3", "--label-fraction", "0.5"])
    assert cfg.data.ood_val == ("A", "B") and (cfg.run.stop_after, cfg.run.max_steps, cfg.run.seed) == (1, 3, 2)
    assert args.pretrained == "RUN" and cfg.run.out_dir == "o" and cfg.data.label_fraction == 0.5
