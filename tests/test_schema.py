"""The strict config machinery on a small config of its own: types, choices, "did you mean", YAML, output."""
import dataclasses
from dataclasses import dataclass, field

import pytest

from sdmp_fast.schema import (FIXED, FREE, ConfigError, absent, changed_fixed_keys, choices, dump_yaml, load,
                              markdown_reference, need, recorded_value, to_dict, unclassified_keys)


@dataclass(frozen=True)
class Part:
    size: int = field(default=3, metadata={"help": "how many"})
    mode: str = field(default="a", metadata={"help": "which", **choices("a", "b")})
    span: tuple[float, float] = field(default=(0.1, 0.9), metadata={"help": "a range"})
    names: tuple[str, ...] = field(default=(), metadata={"help": "any number"})
    on: bool = field(default=True, metadata={"help": "switch"})


@dataclass(frozen=True)
class Tiny:
    part: Part = Part()


def test_defaults_file_and_overrides(tmp_path):
    assert load(Tiny) == Tiny()
    f = tmp_path / "t.yaml"
    f.write_text("part:\n  size: 5\n  mode: b\n")
    cfg = load(Tiny, f, ["part.size=7", "part.names=x,y", "part.span=[0, 1]", "part.on=no"])
    assert cfg.part == Part(size=7, mode="b", span=(0.0, 1.0), names=("x", "y"), on=False)
    assert load(Tiny, overrides={"part.size": 2.0}).part.size == 2  # a whole float is an integer


@pytest.mark.parametrize("override, message", [
    ("part.sise=1", r"command line: unknown key 'part.sise'; part has size, .* \(did you mean part.size\?\)"),
    ("other.size=1", r"unknown key 'other.size'; keys are <section>.<name> with section one of \['part'\]"),
    ("part.mode=c", r"part.mode = 'c' is not allowed; choose one of a, b"),
    ("part.size=1.5", r"part.size: expected an integer, got 1.5"),
    ("part.span=[1]", r"part.span: expected 2 values"),
    ("part.on=perhaps", r"part.on: expected true or false"),
    ("part.size", r"'part.size' is not a key=value override"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load(Tiny, overrides=[override])


def test_duplicated_yaml_keys_are_refused(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("part:\n  size: 1\n  size: 2\n")
    with pytest.raises(ConfigError, match="d.yaml: duplicated key 'size' at line 3"):
        load(Tiny, f)


def test_output_and_need():
    cfg = load(Tiny, overrides=["part.names=[p]"])
    assert to_dict(cfg) == {"part": {"size": 3, "mode": "a", "span": [0.1, 0.9], "names": ["p"], "on": True}}
    text = dump_yaml(cfg)  # block style throughout: no flow maps or lists, one value per line
    assert "names:\n  - p" in text and "{" not in text and "[" not in text
    assert text.startswith("part:\n  size: 3\n  mode: a\n  span:\n  - 0.1\n  - 0.9\n")
    table = markdown_reference(Tiny, ["# Tiny", ""])
    assert "| `part.mode` | str | `'a'` | ? | which (one of: a, b) |" in table  # ?: no FIXED or FREE declared
    table = markdown_reference(Resumable, [])
    assert "| `run.span` | tuple[float, float] | `[0.1, 0.9]` | fixed | a range |" in table
    assert "| `run.log_every` | int | `1` | free | logging |" in table
    need(True, "never")
    with pytest.raises(ConfigError, match="said"):
        need(False, "said")


# ----------------------------------------------------------------------------- resume: fixed and free keys

@dataclass(frozen=True)
class Steps:
    steps: int = field(default=4, metadata={"help": "schedule length", **FIXED})
    span: tuple[float, float] = field(default=(0.1, 0.9), metadata={"help": "a range", **FIXED})
    log_every: int = field(default=1, metadata={"help": "logging", **FREE})
    added: str = field(default="old", metadata={"help": "a key added after some runs were written", **FIXED})
    changed: str = field(default="new", metadata={"help": "a key whose default differs from what older runs did",
                                                  **absent(lambda rec: "old" if rec["run"]["steps"] == 4 else "new"),
                                                  **FIXED})


@dataclass(frozen=True)
class Resumable:
    run: Steps = Steps()


def test_changed_fixed_keys_follow_the_declarations_and_missing_keys_are_their_defaults():
    recorded = to_dict(Resumable())
    assert changed_fixed_keys(recorded, Resumable()) == {}
    now = load(Resumable, overrides=["run.steps=5", "run.log_every=9", "run.span=[0.1, 0.9]"])
    assert changed_fixed_keys(recorded, now) == {"run.steps": (4, 5)}  # a free key changes freely; tuples as lists
    # a run written before run.added existed (and with a key since removed) had the default's behaviour
    old = {"run": {"steps": 4, "span": [0.1, 0.9], "log_every": 1, "removed": 3}}
    assert changed_fixed_keys(old, load(Resumable, overrides=["run.changed=old"])) == {}
    assert changed_fixed_keys(old, load(Resumable, overrides=["run.added=new", "run.changed=old"])) == {
        "run.added": ("old", "new")}
    # ... or, where declared, what its absence means (here a function of the record), not the new default
    assert changed_fixed_keys(old, Resumable()) == {"run.changed": ("old", "new")}
    assert recorded_value(Resumable, old, "run.changed") == "old" and recorded_value(Resumable, old, "run.span") == [
        0.1, 0.9]
    assert recorded_value(Resumable, {"run": {"steps": 5}}, "run.changed") == "new"
    assert unclassified_keys(Resumable) == [] and unclassified_keys(Tiny) == [f"part.{k}" for k in
                                                                            ("size", "mode", "span", "names", "on")]


def _config_sections() -> dict[str, type]:
    """Every dataclass of the package whose fields carry help: the sections of every command's config."""
    import importlib
    import pkgutil

    import sdmp_fast
    found = {}
    for info in pkgutil.walk_packages(sdmp_fast.__path__, "sdmp_fast."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional backend (triton); no config section lives there
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj)
                    and any("help" in f.metadata for f in dataclasses.fields(obj))):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_field_of_every_config_says_whether_a_resume_may_change_it():
    from sdmp_fast.config import Config
    from sdmp_fast.eval.finetune import FinetuneConfig
    from sdmp_fast.eval.linear import LinearConfig
    from sdmp_fast.knn import KnnConfig
    for cls in (Config, LinearConfig, FinetuneConfig, KnnConfig):  # the commands' configs, sections inherited too
        assert unclassified_keys(cls) == [], cls.__name__
    sections = _config_sections()
    assert {"sdmp_fast.config.RunConfig", "sdmp_fast.eval.config.EvalData", "sdmp_fast.knn.KnnSection"} <= set(sections)
    for name, cls in sections.items():  # and any section a new command declares
        bad = [f.name for f in dataclasses.fields(cls) if f.metadata.get("resume") not in ("fixed", "free")]
        assert not bad, f"{name}: declare FIXED or FREE (sdmp_fast/schema.py) in the metadata of {bad}"
