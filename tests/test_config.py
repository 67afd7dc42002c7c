from pathlib import Path

import pytest

from sdmp_fast.config import Config, ConfigError, config_markdown, dump_yaml, from_dict, load_config, resolve, to_dict

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_embedded_run():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.method.name == "mocov3" and cfg.sdmp.enabled and cfg.data.path == ""


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
    assert from_dict(to_dict(cfg)) == cfg
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
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files, "configs/ is empty"
    for f in files:
        load_config(f)


def test_docs_config_md_is_current():
    """docs/config.md is generated: regenerate with `make docs` when this fails."""
    assert (ROOT / "docs" / "config.md").read_text() == config_markdown() + "\n"
