"""The strict config machinery on a small config of its own: types, choices, "did you mean", YAML, output."""
from dataclasses import dataclass, field

import pytest

from sdmp_fast.schema import ConfigError, choices, dump_yaml, load, markdown_reference, need, to_dict


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
    assert "names:\n  - p" in dump_yaml(cfg) or "names: [p]" in dump_yaml(cfg)
    table = markdown_reference(Tiny, ["# Tiny", ""])
    assert "| `part.mode` | str | `'a'` | which (one of: a, b) |" in table
    assert "| `part.span` | tuple[float, float] | `[0.1, 0.9]` | a range |" in table
    need(True, "never")
    with pytest.raises(ConfigError, match="said"):
        need(False, "said")
