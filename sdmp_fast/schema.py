"""Strict configs made of frozen section dataclasses: YAML files, ``section.key=value`` overrides, type checks.

A config is a frozen dataclass whose fields are section dataclasses (``Config.data``, ``Config.run``...);
the field defaults are the defaults. Precedence: defaults < ``--config file.yaml`` < command-line
``section.key=value``. Unknown keys (with "did you mean"), wrong types, duplicated YAML keys and values
outside a field's ``choices`` raise :class:`ConfigError` naming the key and what is allowed.

Every field says what a change means to a run that is resumed (``metadata["resume"]``, :data:`FIXED` or
:data:`FREE`); :func:`changed_fixed_keys` compares a recorded config with the current one by that rule.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


def choices(*names: str) -> dict:
    """Field metadata that limits a field to ``names`` (checked when a value is set; listed in the docs)."""
    return {"choices": names}


# What changing a field means to a resumed run (``--resume auto``), declared with the field:
FIXED = {"resume": "fixed"}  # it changes the run's mathematics or data order: refused unless --allow-config-change
FREE = {"resume": "free"}    # it does not: logging, evaluation, output, where the same data is read from (a path:
#                              the data itself cannot be checked), where or how the same thing is computed


def need(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


# ----------------------------------------------------------------------------- types

def section_classes(cls: type) -> dict[str, type]:
    """{section name: section dataclass} of a config class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce_tuple(key: str, tp: Any, value: Any) -> tuple:
    args = typing.get_args(tp)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list ({type_name(tp)}), got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{key}: expected {len(args)} values ({type_name(tp)}), got {len(value)}: {value!r}")
    return tuple(coerce(f"{key}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))


def _coerce_int(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                f = math.nan
            if f.is_integer():
                return int(f)
    raise ConfigError(f"{key}: expected an integer, got {value!r}")


def _coerce_float(key: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected a number, got {value!r}")


def coerce(key: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists -> tuples)."""
    if typing.get_origin(tp) is tuple:
        return _coerce_tuple(key, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        return _coerce_int(key, value)
    if tp is float:
        return _coerce_float(key, value)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover


# ----------------------------------------------------------------------------- setting keys

def apply_override(cfg: T, key: str, value: Any, source: str) -> T:
    """``cfg`` with ``section.name = value``, checked and converted; errors name ``source``, the key and what is
    allowed."""
    parts = key.split(".")
    classes = section_classes(type(cfg))
    if len(parts) != 2 or parts[0] not in classes:
        raise ConfigError(
            f"{source}: unknown key {key!r}; keys are <section>.<name> with section one of {sorted(classes)}")
    section, name = parts
    cls = classes[section]
    names = [f.name for f in fields(cls)]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        raise ConfigError(f"{source}: unknown key {key!r}; {section} has {', '.join(names)}"
                          + (f" (did you mean {', '.join(section + '.' + c for c in close)}?)" if close else ""))
    meta = {f.name: f.metadata for f in fields(cls)}[name]
    value = coerce(f"{source}: {key}", field_type(cls, name), value)
    allowed = meta.get("choices")
    if allowed and value not in allowed:
        raise ConfigError(f"{source}: {key} = {value!r} is not allowed; choose one of {', '.join(allowed)}")
    sec = dataclasses.replace(getattr(cfg, section), **{name: value})
    return dataclasses.replace(cfg, **{section: sec})


def parse_value(text: str) -> Any:
    """Parse a command-line value with YAML's scalar rules (``1e-3`` -> float, ``true`` -> bool, ``[a, b]`` -> list)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML reads 1e-3 (no dot) as a string; the field's type converts it
    return text if value is None else value


def split_override(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` -> (key, parsed value)."""
    if "=" not in text:
        raise ConfigError(f"command line: {text!r} is not a key=value override (e.g. optim.lr=1e-3)")
    k, v = text.split("=", 1)
    return k.strip(), parse_value(v)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that rejects duplicated keys (plain YAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicated key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file into a flat {dotted key: value} dict; nested sections or dotted keys."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist (configs/ lists the shipped ones)")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections, got {type(data).__name__}")
    flat: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                flat[f"{k}.{kk}"] = vv
        else:
            flat[str(k)] = v
    return flat


def load(cls: type[T], config_file: str | Path | None = None,
         overrides: list[str] | dict[str, Any] | None = None) -> T:
    """Defaults < YAML file < overrides (``["section.key=value", ...]`` or a dict), type-checked (not validated)."""
    cfg = cls()
    if config_file:
        for k, v in load_yaml(config_file).items():
            cfg = apply_override(cfg, k, v, str(config_file))
    items = overrides.items() if isinstance(overrides, dict) else [split_override(o) for o in (overrides or [])]
    for k, v in items:
        cfg = apply_override(cfg, k, v, "command line")
    return cfg


# ----------------------------------------------------------------------------- output

def to_dict(cfg) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} with tuples as lists (what config.yaml and checkpoints record)."""
    out = {}
    for f in fields(cfg):
        sec = getattr(cfg, f.name)
        out[f.name] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(sec).items()}
    return out


def dump_yaml(cfg) -> str:
    """The config as block-style YAML (one key per line, lists as ``- item`` lines), sections in declared order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


# ----------------------------------------------------------------------------- command-line help

def plain_text(doc: str) -> str:
    """A docstring as ``--help`` prints it: reStructuredText markup (````code````, ``:role:`x```, ``**bold**``,
    a trailing ``::``) removed."""
    doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc)
    doc = re.sub(r"``([^`]+)``", r"\1", doc)
    doc = re.sub(r"\*\*([^*]+)\*\*", r"\1", doc)
    return re.sub(r"(\S)::$", r"\1:", doc, flags=re.M)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The ``--help`` of every command: descriptions as written (without RST markup: :func:`plain_text`), and every
    option's default said after its help, unless it has none (None, "", a switch's False) or the help says it."""

    def __init__(self, prog: str, **kwargs):
        super().__init__(prog, max_help_position=32, **kwargs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if d is None or d is False or d is argparse.SUPPRESS or d in ("", []) or "default" in text:
            return text
        shown = " ".join(str(x) for x in d) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()

    def format_help(self) -> str:
        return plain_text(super().format_help())


# ----------------------------------------------------------------------------- resume

def unclassified_keys(cls: type) -> list[str]:
    """The keys of config class ``cls`` whose field declares neither :data:`FIXED` nor :data:`FREE`."""
    return [f"{sec}.{f.name}" for sec, sc in section_classes(cls).items() for f in fields(sc)
            if f.metadata.get("resume") not in ("fixed", "free")]


def absent(value: Any) -> dict:
    """Field metadata for a key added after runs were recorded without it: ``value`` is what its absence in a recorded
    config means (the behaviour those runs had), or a function of the recorded config dict giving it. Without this
    declaration an absent key stands for the field's default."""
    return {"absent": value}


def recorded_value(cls: type, recorded: dict[str, dict[str, Any]], key: str) -> Any:
    """``section.key`` of a recorded config dict of config class ``cls``; when the record lacks it, what the absence
    means (:func:`absent`, else the field's default). Tuples come back as lists, as :func:`to_dict` writes them."""
    sec, name = key.split(".", 1)
    old = recorded.get(sec) or {}
    if name in old:
        value = old[name]
    else:
        f = next(f for f in fields(section_classes(cls)[sec]) if f.name == name)
        value = f.metadata["absent"] if "absent" in f.metadata else f.default
        value = value(recorded) if callable(value) else value
    return list(value) if isinstance(value, tuple) else value


def changed_fixed_keys(recorded: dict[str, dict[str, Any]], cfg) -> dict[str, tuple[Any, Any]]:
    """``{key: (recorded value, current value)}`` for every :data:`FIXED` key of ``cfg`` whose value differs from
    ``recorded`` (a :func:`to_dict` of the same config class, e.g. from a checkpoint).

    The comparison rule, for every command: values are compared as :func:`to_dict` writes them (tuples as lists);
    a key that ``recorded`` lacks (a field added after that run was written) stands for the behaviour that run had:
    its :func:`absent` declaration, else its default (:func:`recorded_value`); a recorded key the class no longer
    declares is not compared.
    """
    now = to_dict(cfg)
    changed = {}
    for sec, sc in section_classes(type(cfg)).items():
        for f in fields(sc):
            if f.metadata.get("resume") != "fixed":
                continue
            before = recorded_value(type(cfg), recorded, f"{sec}.{f.name}")
            if before != now[sec][f.name]:
                changed[f"{sec}.{f.name}"] = (before, now[sec][f.name])
    return changed


def markdown_reference(cls: type, intro: list[str]) -> str:
    """A markdown page: ``intro`` lines, then one table per section (key, type, default, fixed or free on resume,
    help, choices)."""
    lines = list(intro)
    for name, sec in section_classes(cls).items():
        lines += [f"## `{name}`", "", "| key | type | default | on resume | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for f in fields(sec):
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            helptext = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                helptext += " (one of: " + ", ".join(f.metadata["choices"]) + ")"
            resume = f.metadata.get("resume", "?")
            if "absent" in f.metadata:  # what older records without the key mean
                was = f.metadata["absent"]
                resume += "; absent = " + ("see meaning" if callable(was) else f"`{was!r}`")
            lines.append(f"| `{name}.{f.name}` | {type_name(field_type(sec, f.name))} | `{default!r}` | "
                         f"{resume} | {helptext} |")
        lines.append("")
    return "\n".join(lines)
