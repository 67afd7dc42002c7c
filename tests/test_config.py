from pathlib import Path

import pytest

from sdmp_fast.config import (Config, ConfigError, config_markdown, dump_yaml, load_config, resolve, to_dict,
                              with_method_defaults)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_embedded_run():
    cfg = load_config()
    assert cfg == with_method_defaults(Config())
    assert cfg.method.name == "mocov3" and cfg.sdmp.enabled and cfg.data.path == ""


@pytest.mark.parametrize("method, interpolation", [("mocov3", "bilinear"), ("dino", "bicubic")])
def test_auto_interpolation_is_the_methods_and_written_out(method, interpolation):
    """MoCo v3 resizes crops and evaluation views bilinearly, DINO bicubically; 'auto' is recorded as what ran."""
    cfg = load_config(overrides=[f"method.name={method}"])
    assert (cfg.data.interpolation, cfg.data.eval_interpolation) == (interpolation, interpolation)
    assert "interpolation: auto" not in dump_yaml(cfg)
    from sdmp_fast.methods.base import method_recipe
    assert {v.interpolation for v in method_recipe(cfg).views} == {interpolation}  # what every loader is given
    cfg = load_config(overrides=[f"method.name={method}", "data.interpolation=bicubic",
                                 "data.eval_interpolation=bilinear"])
    assert (cfg.data.interpolation, cfg.data.eval_interpolation) == ("bicubic", "bilinear")
    assert {v.interpolation for v in method_recipe(cfg).views} == {"bicubic"}
    with pytest.raises(ConfigError, match="data.interpolation.*choose one of auto, bilinear, bicubic"):
        load_config(overrides=["data.interpolation=nearest"])


def test_precedence_defaults_yaml_cli(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("optim:\n  lr: 0.002\n  weight_decay: 0.05\ndata.batch_size: 64\n")
    cfg = load_config(f, ["optim.lr=1e-3"])
    assert cfg.optim.lr == 1e-3  # CLI beats YAML
    assert cfg.optim.weight_decay == 0.05  # YAML beats defaults
    assert cfg.data.batch_size == 64
    assert cfg.optim.betas == Config().optim.betas  # untouched default


def test_types_are_converted_and_checked():
    cfg = load_config(overrides=["sdmp.ops=mixup,cutmix", "sdmp.enabled=false", "run.max_steps=10", "optim.lr=3"])
    assert cfg.sdmp.ops == ("mixup", "cutmix") and cfg.sdmp.enabled is False
    assert isinstance(cfg.optim.lr, float)
    with pytest.raises(ConfigError, match="run.max_steps: expected an integer"):
        load_config(overrides=["run.max_steps=ten"])
    with pytest.raises(ConfigError, match="sdmp.enabled: expected true or false"):
        load_config(overrides=["sdmp.enabled=maybe"])
    with pytest.raises(ConfigError, match=r"data.mean: expected 3 values"):
        load_config(overrides=["data.mean=[0.5, 0.5]"])


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", r"unknown key 'optim.lrr'.*did you mean optim.lr"),
    ("optimizer.lr=1", r"unknown key 'optimizer.lr'; keys are <section>.<name> with section one of"),
    ("lr=1", r"unknown key 'lr'"),
    ("sdmp.variant=both", r"sdmp.variant = 'both' is not allowed; choose one of replace, extra"),
    ("sdmp.ops=mixup,cutout", r"unknown op\(s\) \['cutout'\]"),
    ("data.batch_size=7", r"data.batch_size = 7: must be an even number"),
    ("optim.lr=-1", r"optim.lr = -1.0: must be > 0"),
    ("run.precision=fp8", r"run.precision = 'fp8' is not allowed; choose one of auto, fp32, bf16, fp16"),
    ("optim.lr", r"not a key=value override"),
    ("data.local_scale=[0.5, 0.2]", r"data.local_scale = \[0.5, 0.2\]: need 0 < low <= high <= 1"),
    ("data.local_crops=-1", r"data.local_crops = -1: must be >= 0"),
    ("optim.clip_mode=norm", r"optim.clip_mode = 'norm' is not allowed; choose one of global, per_param"),
    ("optim.weight_decay_end=-0.5", r"optim.weight_decay_end = -0.5: must be >= 0, or -1"),
    ("method.teacher_temp=0", r"method.teacher_temp = 0.0: must be > 0"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_yaml_errors(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("optim:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(ConfigError, match="duplicated key 'lr' at line 3"):
        load_config(dup)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1\n  wd 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_round_trip_and_resolve():
    cfg = load_config(overrides=["data.batch_size=256", "run.max_steps=0", "run.epochs=3", "optim.warmup_epochs=1"])
    # config.yaml's sections read back as overrides give the same config
    assert load_config(overrides={f"{s}.{k}": v for s, sec in to_dict(cfg).items() for k, v in sec.items()}) == cfg
    assert "batch_size: 256" in dump_yaml(cfg)
    res = resolve(cfg, num_samples=1000, world=2)
    assert res.local_batch == 128 and res.steps_per_epoch == 3 and res.total_steps == 9 and res.warmup_steps == 3
    assert res.lr == pytest.approx(cfg.optim.lr)  # batch 256 -> x1
    with pytest.raises(ConfigError, match="per-rank batch 3"):
        resolve(load_config(overrides=["data.batch_size=6"]), 100, world=2)
    with pytest.raises(ConfigError, match="not divisible by the world size 4"):
        resolve(load_config(overrides=["data.batch_size=6"]), 100, world=4)
    with pytest.raises(ConfigError, match="larger than the training set"):
        resolve(cfg, num_samples=100)


def test_shipped_configs_load():
    files = sorted((ROOT / "configs").glob("*.yaml"))  # pretraining; configs/eval/ holds the evaluation commands'
    assert files, "configs/ is empty"
    for f in files:
        load_config(f)


def test_docs_config_md_is_current():
    """docs/config.md is generated: regenerate with `make docs` when this fails."""
    assert (ROOT / "docs" / "config.md").read_text() == config_markdown() + "\n"


def test_dino_sdmp_combinations_are_checked():
    with pytest.raises(ConfigError, match="leaves no mixed student view: set sdmp.mix_global_student=true"):
        load_config(overrides=["method.name=dino", "data.local_crops=0"])
    with pytest.raises(ConfigError, match="DINO \\+ SDMP has only the 'replace' variant"):
        load_config(overrides=["method.name=dino", "sdmp.variant=extra"])
    load_config(overrides=["method.name=dino", "data.local_crops=0", "sdmp.mix_global_student=true"])
    load_config(overrides=["method.name=dino", "data.local_crops=0", "sdmp.enabled=false"])


def test_dino_configs_follow_the_recipe():
    """docs/method.md, DINO: the 300-epoch ViT-S recipe, and DINO's 100-epoch defaults for the Table 10 ablations."""
    for name in ("dino_vit_s", "dino_sdmp_vit_s"):
        c = load_config(ROOT / "configs" / f"{name}.yaml")
        assert (c.method.name, c.model.backbone, c.data.batch_size, c.run.epochs) == ("dino", "vit_small_dino", 1024, 300)
        assert (c.data.image_size, c.data.local_size, c.data.local_crops) == (224, 96, 8)
        assert c.data.global_scale == (0.4, 1.0) and c.data.local_scale == (0.05, 0.4)
        assert (c.data.interpolation, c.data.eval_interpolation, c.model.pos_resample) == ("bicubic", "bicubic", "dino")
        assert (c.optim.lr, c.optim.min_lr, c.optim.warmup_epochs) == (5e-4, 1e-6, 10)
        assert (c.optim.weight_decay, c.optim.weight_decay_end, c.optim.clip_grad, c.optim.clip_mode) == (0.04, 0.4, 3.0, "per_param")
        assert (c.model.drop_path, c.method.momentum, c.method.momentum_final) == (0.1, 0.996, 1.0)
        m = c.method
        assert (m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs, m.student_temp) == (0.04, 0.07, 30, 0.1)
        assert (m.center_momentum, m.dino_out_dim, m.norm_last_layer, m.freeze_last_layer) == (0.9, 65536, False, 1)
        assert c.sdmp.enabled == ("sdmp" in name)
    for L in (0, 2, 6, 8):
        for sdmp in (False, True):
            c = load_config(ROOT / "configs" / f"dino{'_sdmp' if sdmp else ''}_100ep_crops2x{L}.yaml")
            assert (c.run.epochs, c.data.local_crops, c.sdmp.enabled) == (100, L, sdmp)
            assert (c.method.teacher_temp, c.method.norm_last_layer) == (0.04, True)
            assert c.sdmp.mix_global_student == (sdmp and L == 0)
            assert c.data.batch_size == 1024 and c.data.interpolation == c.data.eval_interpolation == "bicubic"
            # without local crops DINO advises a wider global crop scale (main_dino.py --global_crops_scale help)
            assert c.data.global_scale == ((0.14, 1.0) if L == 0 else (0.4, 1.0))
