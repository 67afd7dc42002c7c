"""Runs started before the 2026-12 redesign keep working: checkpoints resume and exports evaluate as they did.

The fixtures under ``tests/fixtures/compat/`` were written by commit 9a32ae2 (the layout before the redesign)
with one torch thread: a MoCo v3 + SDMP and a DINO + SDMP pretraining checkpoint at step 2 of 4 (synthetic
loader, tiny heads, SGD without momentum to keep the files small), the MoCo v3 run's ``backbone.pt`` after
step 4, and a linear-probe checkpoint after epoch 1 of 3 on the folder of ``write_image_folder``.
``expected.json`` holds what that commit printed when it continued them: the logged values of steps 3-4,
per-tensor sums and maxima of the final method state, the k-NN and linear results. The commands were:

    pretrain --out RUN --config configs/smoke.yaml --loader synthetic run.max_steps=4 run.threads=1 run.seed=3
             optim.name=sgd optim.momentum=0 optim.lr=0.05 run.knn=false <RUNS below> run.stop_after=2
    pretrain --out RUN --resume auto (same arguments)
    knn --pretrained backbone.pt --data IMGS knn.bank=24 knn.k=5 run.threads=1
    linear --pretrained backbone.pt --data IMGS --cached-features run.epochs=3 data.batch_size=12 run.threads=1
           data.num_workers=0 run.stop_after=1, then --resume auto

A DINO run from before model.pos_resample and data.interpolation existed (timm's antialiased position-table
resampling, bilinear crops) continues only with those values, which the refused start names
(``LEGACY_DINO``); without them the resume is refused, and a new start would differ.

What a refactor can break is the state-dict key names, the layout of the random-stream state and the
recorded config dicts; any of those changes the continued run by far more than the bound used here
(1e-6 relative; with one thread the continuation is bit-exact on the machine that wrote the fixtures).
"""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from sdmp_fast.schema import ConfigError

FIX = Path(__file__).parent / "fixtures" / "compat"
ROOT = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((FIX / "expected.json").read_text())
COMMON = ["--config", str(ROOT / "configs" / "smoke.yaml"), "--loader", "synthetic", "run.max_steps=4",
          "run.threads=1", "run.seed=3", "optim.name=sgd", "optim.momentum=0", "optim.lr=0.05", "run.knn=false"]
RUNS = {"mocov3_sdmp": ["sdmp.enabled=true"],
        "dino_sdmp": ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.local_crops=2",
                      "data.local_size=16", "method.dino_out_dim=64", "method.dino_hidden_dim=32",
                      "method.dino_bottleneck_dim=16", "sdmp.enabled=true", "method.warmup_teacher_temp_epochs=0",
                      "optim.weight_decay_end=0.2", "optim.clip_grad=3.0", "optim.clip_mode=per_param",
                      "method.freeze_last_layer=0"]}


# what a DINO run recorded before these keys existed did (their absence in its config means these values)
LEGACY_DINO = ["data.interpolation=bilinear", "model.pos_resample=timm"]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_old_pretraining_checkpoint_resumes_exactly(name, tmp_path, one_thread):
    from sdmp_fast.engine import checkpoint as ckpt
    from sdmp_fast.pretrain import run

    out = tmp_path / name
    (out / "checkpoints").mkdir(parents=True)
    for f in (FIX / name).glob("*.pt"):
        shutil.copy(f, out / "checkpoints" / f.name)
    shutil.copy(FIX / name / "config.yaml", out / "config.yaml")
    args = ["--out", str(out), "--resume", "auto", *COMMON, *RUNS[name]]
    if name.startswith("dino"):
        with pytest.raises(ConfigError) as e:  # today's DINO defaults would change the run: refused, nothing written
            run(args, progress=False)
        assert f"run with the checkpoint's values (add: {' '.join(LEGACY_DINO)})" in str(e.value)
        assert not (out / "metrics.jsonl").exists()
        args += LEGACY_DINO
    summary = run(args, progress=False)
    want = EXPECTED[name]
    assert summary["steps"] == want["final_step"] == 4
    got = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    got = [g for g in got if g["step"] > 2]
    assert [g["step"] for g in got] == [w["step"] for w in want["metrics_after_resume"]]
    for g, w in zip(got, want["metrics_after_resume"]):
        for key, value in w.items():
            assert close(g[key], value), (g["step"], key, g[key], value)
    final = ckpt.load(ckpt.latest_checkpoint(out))["method"]
    assert sorted(final) == sorted(want["final_method"])
    for key, (total, amax, shape, dtype) in want["final_method"].items():
        v = final[key]
        assert list(v.shape) == shape and str(v.dtype) == dtype, key
        assert close(float(v.double().sum()), total) and close(float(v.double().abs().max()), amax), key


def test_old_export_evaluates_as_before(image_folder, tmp_path, one_thread):
    from sdmp_fast.export import load_backbone
    from sdmp_fast.knn import run as knn

    model = load_backbone(FIX / "backbone.pt")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 128)
    rep = knn(["--pretrained", str(FIX / "backbone.pt"), "--data", str(image_folder), "--out", str(tmp_path / "knn"),
               "knn.bank=24", "knn.k=5", "run.threads=1"])
    for key in ("bank", "queries", "k"):
        assert rep[key] == EXPECTED["knn"][key]
    for arm in ("trained", "random_init"):
        assert close(rep[arm]["top1"], EXPECTED["knn"][arm]["top1"]), arm


def test_old_linear_checkpoint_resumes(image_folder, tmp_path, one_thread):
    from sdmp_fast.linear import run as linear

    export = tmp_path / "backbone.pt"
    shutil.copy(FIX / "backbone.pt", export)
    out = tmp_path / "lin"
    (out / "checkpoints").mkdir(parents=True)
    for f in (FIX / "linear").glob("*.pt"):
        state = torch.load(f, weights_only=False)
        state["pretrained"] = str(export.resolve())  # the checkpoint names its export by absolute path
        torch.save(state, out / "checkpoints" / f.name)
    shutil.copy(FIX / "linear" / "config.yaml", out / "config.yaml")
    res = linear(["--pretrained", str(export), "--data", str(image_folder), "--out", str(out), "--cached-features",
                  "--resume", "auto", "run.epochs=3", "data.batch_size=12", "run.threads=1", "data.num_workers=0"],
                 progress=False)
    for arm in ("trained", "random_init"):
        assert close(res[arm]["top1"], EXPECTED["linear"][arm]["top1"]), arm
