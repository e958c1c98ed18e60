"""Run configs: read from YAML with ``--set`` overrides, checked key by key before any work.

Every config is a dataclass (``TrainConfig``, ``ScoreConfig``, ``PPOConfig``). :func:`build` checks
unknown and missing keys and each value's type against the field's annotation, then lets the
dataclass check ranges and combinations in ``__post_init__``; every problem is a
:class:`~bfpo.errors.ConfigError` naming the file, the key, the value and what was expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import types
import typing
from pathlib import Path

import yaml

from bfpo.errors import BadInput, ConfigError

RUNTIME_KEYS = ("num_threads", "progress", "keep_checkpoints", "start_over", "report_to", "device")
"""Config keys that change how a run executes, not what it computes (ignored when comparing runs)."""


def load_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML config file, with one clear error for a missing file or bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"{path}{at}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BadInput(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` from ``--set``; the value is read as YAML (``3`` is a number, ``[a, b]`` a list)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"--set {key}: the value {value!r} is not valid YAML") from None


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """The ``--set KEY=VALUE`` option (repeatable, values read as YAML) into ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], type=parse_override, metavar="KEY=VALUE", help=help
    )


def _describe(tp) -> str:
    if tp is type(None):
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce(value, tp):
    """``value`` as type ``tp``, or raise TypeError. Ints pass as floats; a numeric string (YAML
    reads ``1e-4`` as a string) passes as a float; booleans never pass as numbers."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except TypeError:
                continue
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise TypeError
        if origin is tuple and len(value) != len(args):
            raise TypeError
        items = [_coerce(v, args[0]) for v in value]
        return tuple(items) if origin is tuple else items
    return value


def build(cls, values: dict, where: str = "config"):
    """An instance of the dataclass ``cls`` from ``values``, every key checked (see module doc)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(fields))}"
        raise ConfigError(where, unknown[0], f"unknown key ({hint})")
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in values]
    if missing:
        raise ConfigError(where, missing[0], "missing (required)")
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _coerce(value, hints[key])
        except TypeError:
            raise ConfigError(
                where, key, f"expected {_describe(hints[key])}, got {value!r} ({type(value).__name__})"
            ) from None
    try:
        return cls(**checked)
    except ConfigError:
        raise
    except ValueError as e:  # a range or combination check of __post_init__: "key: problem"
        key, _, problem = str(e).partition(": ")
        if key in fields and problem:
            raise ConfigError(where, key, problem) from None
        raise ConfigError(where, None, str(e)) from None


def check_ranges(cfg, positive=(), at_least_one=(), non_negative=(), unit=()) -> None:
    """Range checks for ``__post_init__``: raise ``ValueError("key: problem")`` (``build`` turns it
    into a ConfigError naming the file and key). ``None`` passes (an optional key left unset)."""
    rules = [
        (positive, lambda v: v > 0, "must be > 0"),
        (at_least_one, lambda v: v >= 1, "must be >= 1"),
        (non_negative, lambda v: v >= 0, "must be >= 0"),
        (unit, lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
    ]
    for names, ok, rule in rules:
        for name in names:
            value = getattr(cfg, name)
            if value is not None and not ok(value):
                raise ValueError(f"{name}: {rule}, got {value}")


def from_yaml(cls, path: str | os.PathLike, overrides: dict | None = None):
    """``cls`` from a YAML file, with ``overrides`` (from ``--set``) on top."""
    where = str(path) + (" (with --set overrides)" if overrides else "")
    return build(cls, {**load_yaml(path), **(overrides or {})}, where=where)


def as_json(cfg) -> dict:
    """The config as the JSON it is saved as (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def same_run(saved: dict, cfg) -> bool:
    """Whether a saved config (a dict) computes the same run as ``cfg``, runtime keys aside."""
    strip = lambda d: {k: v for k, v in d.items() if k not in RUNTIME_KEYS}  # noqa: E731
    return strip(saved) == strip(as_json(cfg))


def require_path(value: str | None, where: str, key: str, what: str = "file or folder") -> None:
    """``value`` must be an existing file or folder (``None`` passes: the key is optional)."""
    if value is not None and not Path(value).exists():
        raise ConfigError(where, key, f"{value}: no such {what}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def require_model(value: str, where: str, key: str) -> None:
    """``value`` must be a local model folder, or look like a hub id (``org/name``) to be fetched.

    A string that is neither (``runs/x/model`` that does not exist, ``./m``, an absolute path)
    is an error saying so, instead of a hub lookup failing on a path.
    """
    path = Path(value)
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ConfigError(where, key, f"{value}: a folder, but it holds no model (no config.json)")
        return
    if path.exists():
        raise ConfigError(where, key, f"{value}: a file, not a model folder")
    looks_local = value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value
    if looks_local or not _HUB_ID.match(value):
        raise ConfigError(where, key, f"{value}: no such folder (and not a hub id such as org/name)")
