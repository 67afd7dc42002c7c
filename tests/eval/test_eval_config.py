"""The sections shared by the evaluation commands: data defaults from the pretraining run, the loader check."""
import pytest

from sdmp_fast.eval.config import EvalData, fill_data_defaults, validate_data
from sdmp_fast.schema import ConfigError


def test_class_subset_follows_the_pretraining_data():
    rec = {"data": {"path": "/d/imagenet", "class_subset": "/d/in100.txt"}}
    assert fill_data_defaults(EvalData(), rec).class_subset == "/d/in100.txt"
    assert fill_data_defaults(EvalData(path="/d/imagenet"), rec).class_subset == "/d/in100.txt"
    assert fill_data_defaults(EvalData(path="/d/other"), rec).class_subset == ""  # other data: every class
    assert fill_data_defaults(EvalData(class_subset="all"), rec).class_subset == ""
    assert fill_data_defaults(EvalData(class_subset="/d/x.txt"), rec).class_subset == "/d/x.txt"


def test_only_the_loaders_declared_for_evaluation_are_accepted():
    validate_data(EvalData(loader="torch"))
    for name in ("dali", "nvjpeg", "ffcv", "synthetic"):
        with pytest.raises(ConfigError, match=f"data.loader = '{name}'.*supported: torch\\); use --loader torch"):
            validate_data(EvalData(loader=name))


def test_eval_interpolation_follows_the_pretraining_record():
    """A DINO run's evaluations resize bicubically, a MoCo v3 run's bilinearly; a record from before the key: bilinear."""
    from sdmp_fast.config import load_config, to_dict
    dino, moco = (to_dict(load_config(overrides=[f"method.name={m}"])) for m in ("dino", "mocov3"))
    assert fill_data_defaults(EvalData(), dino).eval_interpolation == "bicubic"
    assert fill_data_defaults(EvalData(), moco).eval_interpolation == "bilinear"
    old = {k: v for k, v in dino["data"].items() if k != "eval_interpolation"}
    assert fill_data_defaults(EvalData(), {**dino, "data": old}).eval_interpolation == "bilinear"
    assert fill_data_defaults(EvalData(), None).eval_interpolation == "bilinear"
    assert fill_data_defaults(EvalData(eval_interpolation="bilinear"), dino).eval_interpolation == "bilinear"
