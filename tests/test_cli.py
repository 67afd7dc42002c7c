"""What every command shares (sdmp_fast/cli.py): overrides after any option, help with defaults, block YAML, Ctrl-C."""
import argparse
import importlib
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "configs" / "smoke.yaml")
sys.path.insert(0, str(ROOT))


@pytest.mark.parametrize("command, argv, expected", [
    ("pretrain", ["--loader", "synthetic", "run.max_steps=2", "--out", "{tmp}/x", "run.knn=false", "--config", SMOKE,
                  "optim.lr=0.01"],
     {"data.loader": "synthetic", "run.max_steps": 2, "run.out_dir": "{tmp}/x", "run.knn": False, "optim.lr": 0.01}),
    ("linear", ["--pretrained", "{run}", "run.epochs=3", "--protocol", "dino", "run.stop_after=1", "--out", "{tmp}/l",
                "optim.lr=0.5"],
     {"run.epochs": 3, "probe.protocol": "dino", "run.stop_after": 1, "run.out_dir": "{tmp}/l", "optim.lr": 0.5}),
    ("finetune", ["--pretrained", "{run}", "--ood-val", "{tmp}/a", "{tmp}/b", "run.stop_after=1", "--out", "{tmp}/f",
                  "run.seed=3"],
     {"data.ood_val": ["{tmp}/a", "{tmp}/b"], "run.stop_after": 1, "run.out_dir": "{tmp}/f", "run.seed": 3}),
    ("knn", ["--pretrained", "{run}", "knn.k=5", "--out", "{tmp}/k", "knn.bank=7"],
     {"knn.k": 5, "run.out_dir": "{tmp}/k", "knn.bank": 7}),
], ids=["pretrain", "linear", "finetune", "knn"])
def test_overrides_stand_before_between_and_after_options(command, argv, expected, mocov3_run, tmp_path, capsys):
    """``section.key=value`` after another option is an override (not refused, not swallowed by --ood-val DIR ...)."""
    sub = {"{run}": str(mocov3_run), "{tmp}": str(tmp_path)}

    def fill(x):
        for k, v in sub.items():
            x = x.replace(k, v) if isinstance(x, str) else x
        return x
    main = importlib.import_module(f"sdmp_fast.{command}").main
    assert main([fill(a) for a in argv] + ["--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in expected.items():
        section, name = key.split(".")
        assert printed[section][name] == ([fill(v) for v in value] if isinstance(value, list) else fill(value)), key


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by the command line a user types."""
    from benchmarks import accuracy, knn_seeds, soak, throughput
    from loaders import shards, write_beton
    from sdmp_fast import finetune, knn, linear, pretrain
    out = {f"python -m sdmp_fast.{m.__name__.rsplit('.', 1)[1]}": m.build_parser() for m in (pretrain, linear,
                                                                                           finetune, knn)}
    for name, module in (("python -m loaders.write_beton", write_beton), ("python -m loaders.shards", shards),
                         ("python benchmarks/throughput.py", throughput), ("python benchmarks/soak.py", soak),
                         ("python benchmarks/accuracy.py", accuracy), ("python benchmarks/knn_seeds.py", knn_seeds)):
        out[name] = module.parser()
    return out


def test_every_help_names_the_command_explains_every_option_and_says_its_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    parsers = _parsers()
    for command, p in parsers.items():
        text = p.format_help()
        assert text.startswith(f"usage: {command} "), command
        for markup in ("``", ":class:", ":func:", "**"):
            assert markup not in text, (command, markup)
        for action in p._actions:
            assert action.help, (command, action.option_strings or action.dest)
    pretrain = parsers["python -m sdmp_fast.pretrain"].format_help()
    assert "alias of data.loader (default: torch)" in pretrain
    assert "alias of run.out_dir (default: runs/default)" in pretrain
    assert "(default: embedded Fashion-MNIST)" in pretrain
    linear = parsers["python -m sdmp_fast.linear"].format_help()
    assert "alias of run.out_dir (default: a sub-folder of the pretraining run directory)" in linear
    beton = parsers["python -m loaders.write_beton"].format_help()
    assert "(default: 400)" in beton and "(default: 0.5)" in beton and "(default: 90)" in beton
    assert "(default: 0 1 2)" in parsers["python benchmarks/accuracy.py"].format_help()


def test_print_config_is_block_yaml(capsys):
    from sdmp_fast.pretrain import main
    assert main(["--print-config", "sdmp.ops=mixup,cutmix"]) == 0
    text = capsys.readouterr().out
    assert "{" not in text and "[" not in text  # no flow map or list anywhere
    assert "  ops:\n  - mixup\n  - cutmix\n" in text and "\nmodel:\n  backbone: vit_tiny_p4\n" in text


def test_ctrl_c_outside_training_is_one_line_and_status_130(capsys):
    from sdmp_fast.cli import main

    def interrupted(argv):
        raise KeyboardInterrupt
    assert main(interrupted, []) == 130
    assert capsys.readouterr().err == "\ninterrupted (Ctrl-C)\n"
