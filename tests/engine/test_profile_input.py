"""--profile-input (engine/profile_input.py): the three arms, the verdict, the levers, the command and its JSON.

The slowed loader and the slowed step sleep a fixed time per batch against a step (or loader) that costs
nothing, so the verdicts do not depend on the load of the machine running the tests."""
import json
import time
from pathlib import Path

import pytest
import torch
from conftest import DINO_TINY
from loader_doubles import Slowed

import loaders  # noqa: F401
from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine import profile_input as prof
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.methods import build_method
from sdmp_fast.methods.base import method_recipe
from sdmp_fast.models import build_backbone
from sdmp_fast.pretrain import main, run
from sdmp_fast.registry import LOADERS

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = ["data.batch_size=8", "data.image_size=16", "method.hidden_dim=32", "method.out_dim=16", "run.knn=false"]
PAUSE = 0.05


def _profile(tmp_path, monkeypatch, slow_loader: bool, slow_step: bool, steps: int = 4) -> dict:
    def step(self, views):  # the optimizer step replaced by a fixed cost (a sleep) or none
        if slow_step:
            time.sleep(PAUSE)
        self.step += 1
        return {}
    monkeypatch.setattr(Trainer, "train_step", step)
    cfg = load_config(None, TINY)
    method = build_method(cfg, build_backbone(cfg))
    recipe = method_recipe(cfg)
    ld = LOADERS.build("synthetic", cfg, recipe, rank=0, world=1, device=torch.device("cpu"))
    ld = Slowed(ld, PAUSE) if slow_loader else ld
    return prof.profile_input(cfg, resolve(cfg, ld.num_samples), method, ld, recipe, torch.device("cpu"), tmp_path,
                              steps)


def test_a_slowed_loader_is_input_bound(tmp_path, monkeypatch):
    r = _profile(tmp_path, monkeypatch, slow_loader=True, slow_step=False)
    assert r["bound"] == "input-bound" and r["verdict"].startswith("input-bound: the loader alone delivers")
    assert r["arms"]["input"]["s_per_step"] >= PAUSE and r["arms"]["real"]["data_wait_frac"] > 0.5
    assert json.loads((tmp_path / "profile_input.json").read_text())["bound"] == "input-bound"


def test_a_slowed_step_is_compute_bound(tmp_path, monkeypatch):
    r = _profile(tmp_path, monkeypatch, slow_loader=False, slow_step=True)
    assert r["bound"] == "compute-bound" and r["levers"] == []
    assert r["arms"]["compute"]["s_per_step"] >= PAUSE and r["arms"]["real"]["data_wait_frac"] < 0.5
    assert "| compute ceiling: synthetic views, step" in r["table"] and "verdict: compute-bound" in r["table"]


def test_verdicts():
    assert prof.verdict(100, 50, 49)[0] == "input-bound"
    kind, text = prof.verdict(100, 50, 49)
    assert "50% of the 100 the step could take (2.0x more)" in text and "compete" not in text
    assert prof.verdict(50, 100, 49)[0] == "compute-bound"
    kind, text = prof.verdict(100, 110, 40)
    assert kind == "balanced" and "40% of the slower ceiling" in text


def test_levers_name_what_was_measured():
    base = {"loader": "torch", "device": "cpu", "cores": 8, "threads": 2, "source": "folder", "view_size": 32,
            "augment_path": "per sample on the CPU"}
    got = prof.levers({**base, "decode_ms": 3.0, "augment_ms": 1.0, "stored_side": 500})
    assert "has 2 of this machine's 8 cores: raise data.num_workers" in got[0]
    assert got[1].startswith("decoding dominates: 3.00 ms") and "--max-resolution" in got[2]
    assert "--loader dali or --loader nvjpeg on a machine with one" in got[3]
    got = prof.levers({**base, "loader": "ffcv", "source": "beton", "threads": 8, "decode_ms": 3.0,
                       "augment_ms": 1.0, "stored_side": 500})
    assert "rewrite the .beton with a smaller --max-resolution" in got[1]
    got = prof.levers({**base, "loader": "nvjpeg", "device": "cuda", "threads": None, "decode_ms": 0.1,
                       "augment_ms": 1.0, "stored_side": 40, "augment_path": "batched on cuda"})
    assert got[0].startswith("augmentation dominates") and "data.augment_impl=triton" in got[1]
    assert "in the main (training) process" in prof.levers({**base, "threads": 0})[0]


def test_input_costs_of_a_folder(image_folder):
    from sdmp_fast.data.folders import scan_folder
    cfg = load_config(None, TINY + [f"data.path={image_folder}"])
    split = scan_folder(image_folder / "train")[0]
    costs = prof.input_costs(cfg, split, method_recipe(cfg), torch.device("cpu"))
    assert costs["decode_ms"] > 0 and costs["augment_ms"] > 0 and costs["augment_path"] == "per sample on the CPU"
    assert costs["sampled"].startswith("16 images of") and costs["stored_side"] > 16
    costs = prof.input_costs(load_config(None, TINY + ["data.loader=nvjpeg"]), split, method_recipe(cfg),
                             torch.device("cpu"))
    assert costs["augment_path"] == "batched on cpu" and costs["augment_ms"] > 0


def test_the_command_prints_the_table_and_writes_only_its_json(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step_000000001.pt").write_bytes(b"a run's checkpoint: profiling leaves it alone")
    assert main(["--config", SMOKE, "--data", str(image_folder), "--out", str(out), "--profile-input", "1",
                 "data.image_size=16", "method.hidden_dim=32", "method.out_dim=16"]) == 0
    printed = capsys.readouterr()
    for row in ("compute ceiling: synthetic views, step", "input ceiling: loader alone, no step", "real: loader + step"):
        assert row in printed.out
    assert "verdict: " in printed.out and "torch, in the main process" in printed.out
    record = json.loads((out / "profile_input.json").read_text())
    assert record["steps"] == 1 and record["costs"]["decode_ms"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "profile_input.json"]
    with pytest.raises(SystemExit):
        main(["--config", SMOKE, "--out", str(tmp_path / "x"), "--profile-input", "0"])
    assert "argument --profile-input: '0': the number of steps per arm must be" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_dino_on_synthetic_data(tmp_path):
    """DINO + SDMP's multi-crop views through the three arms (a loader that reads no files: no per-image costs)."""
    record = run(["--config", SMOKE, "--loader", "synthetic", *DINO_TINY, "data.image_size=16", "data.local_size=8",
                  "--out", str(tmp_path), "--profile-input", "1"])
    assert record["job"].startswith("dino + SDMP, vit_tiny_p4_dino") and "decode_ms" not in record["costs"]
    assert all(record["arms"][arm]["images_per_s"] > 0 for arm in ("compute", "input", "real"))
