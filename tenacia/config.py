"""One loader for the three config trees: a training run, a server, a plan.

Every section is a ``@dataclass(kw_only=True, slots=True)`` owned by the component it configures
(``ModelConfig`` in ``tenacia.shape``, ``CheckpointConfig`` in ``tenacia.checkpoint`` and so on);
a root gathers them: ``RunConfig`` (``tenacia.train.config``), ``ServeConfig``
(``tenacia.serve.config``), ``TrainPlan``/``ServePlan`` (``tenacia.plan``). This module only knows
how to turn a dict (from a TOML file and ``-o a.b=value`` overrides) into such a tree and back.

Contract:
- An unknown key, a value of the wrong type, or a value a section's ``__post_init__`` rejects,
  raises ``ConfigError`` naming the dotted field, the value and what is allowed, before any work
  starts.
- Sections check their own invariants in ``__post_init__`` by calling ``check``/``check_choice``
  with their bare field names; the loader adds the section's path (``lr`` -> ``optim.lr``).
- A root may declare ``MOVED`` (old dotted name -> new one): a value found at an old name is read
  at the new one, with a warning on stderr, so configs and run directories written before a
  field moved keep working. A value given at both names is an error naming both.
- Command-line short flags are aliases: they become overrides of tree fields (``flag_overrides``),
  never a second set of defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is wrong. The message names the field, the value and what is allowed."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"config field '{field}' = {value!r} is not valid: {allowed}")


def check(ok: bool, field: str, value: Any, allowed: str) -> None:
    """Raise ConfigError for ``field`` unless ``ok``; sections call this in ``__post_init__``."""
    if not ok:
        raise ConfigError(field, value, allowed)


def check_finite(section: Any) -> None:
    """Raise ConfigError for the first float field of dataclass ``section`` that is NaN or
    infinite: a rate, time or count of infinity is never a meaningful input."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f.name, value, "a finite number")


def check_choice(field: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:  # the message is built only when it is needed (hot in plan searches)
        raise ConfigError(field, value, f"one of {', '.join(repr(c) for c in choices)}")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if get_origin(tp) in (list, tuple):
        return f"list of {_type_name(get_args(tp)[0])}" if get_args(tp) else "list"
    return getattr(tp, "__name__", str(tp))


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the few lossless cases."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        check_choice(path, value, get_args(tp))
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(path, arg, value)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(path, value, f"expected {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, value, f"expected {_type_name(tp)}")
        (item,) = get_args(tp)[:1] or (Any,)
        items = [_coerce(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, value, "expected a table")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(path, value, f"expected a table of {tp.__name__} fields")
        return from_dict(tp, value, prefix=path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, value, "expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(path, value, "expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(path, value, "expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, value, "expected a string")
    if isinstance(value, tp):
        return value
    raise ConfigError(path, value, f"expected {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(path, value, f"unknown key; allowed keys here: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(path, hints[key], value)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}.{name}" if prefix else name, None, "a value: this field is required")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not getattr(e, "_placed", False):
            e = ConfigError(f"{prefix}.{e.field}", e.value, e.allowed)
        e._placed = True  # the innermost section that raised it has given it its path
        raise e from None


def to_dict(obj: Any) -> Any:
    """Plain dict/list tree of a dataclass tree (for TOML/JSON output and checkpoint manifests)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=3e-4'`` -> (['optim', 'lr'], 3e-4). The value is read as a TOML literal when it
    parses as one (numbers, booleans, quoted strings, arrays), else taken as a bare string."""
    if "=" not in text:
        raise ConfigError(text, text, "an override looks like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(key, raw, "an override looks like section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def merge_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(path), value, f"'{part}' is not a section")
    node[path[-1]] = value


def read_toml(toml_path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; ConfigError naming the file when it is missing or not TOML."""
    path = Path(toml_path)
    if not path.is_file():
        raise ConfigError("config file", str(path), "a path to an existing TOML file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config file", str(path), f"valid TOML ({e})") from None


def apply_moved(data: dict[str, Any], moved: typing.Mapping[str, str], warn: bool = True) -> None:
    """Read values found at old dotted names at their new ones (module contract)."""
    for old, new in moved.items():
        *parents, leaf = old.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *new_parents, new_leaf = new.split(".")
        target = data
        for part in new_parents:
            target = target.setdefault(part, {})
        if new_leaf in target and target[new_leaf] != value:
            raise ConfigError(old, value, f"set only once: '{old}' is now '{new}', which is set to "
                              f"{target[new_leaf]!r}")
        target[new_leaf] = value
        if warn:
            print(f"tenacia: config field '{old}' is now '{new}'; read as such (update the config)",
                  file=sys.stderr)


def load(cls: type[T], toml_path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """Load root ``cls`` from an optional TOML file plus ``a.b=value`` overrides (in order)."""
    data: dict[str, Any] = read_toml(toml_path) if toml_path is not None else {}
    moved = getattr(cls, "MOVED", {})
    apply_moved(data, moved)
    for text in overrides:
        key, value = parse_override(text)
        dotted = ".".join(key)
        if dotted in moved:
            print(f"tenacia: config field '{dotted}' is now '{moved[dotted]}'; read as such", file=sys.stderr)
            key = moved[dotted].split(".")
        merge_override(data, key, value)
    return from_dict(cls, data)


def flag_overrides(values: typing.Mapping[str, Any], aliases: typing.Mapping[str, str]) -> list[str]:
    """``-o`` overrides for the command-line flags that were given: ``aliases`` maps a flag's
    argparse dest to the dotted tree field it stands for; flags left at None are not given."""
    out = []
    for dest, path in aliases.items():
        value = values.get(dest)
        if value is not None:
            out.append(f"{path}={json.dumps(value)}")
    return out


def dumps_toml(obj: Any) -> str:
    """Render a dataclass tree as TOML (values only; None values are left out, TOML has no null)."""
    tree = to_dict(obj)
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
        subs = {k: v for k, v in table.items() if isinstance(v, dict)}
        if scalars and name:
            lines.append(f"[{name}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {json.dumps(v)}")
        if scalars:
            lines.append("")
        for k, v in subs.items():
            emit(v, f"{name}.{k}" if name else k)

    emit(tree, "")
    return "\n".join(lines)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The two ways every command with a config tree takes it: a TOML file and overrides."""
    p.add_argument("--config", "-c", default=None, help="TOML file with the config tree")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. -o optim.lr=3e-4 (repeatable)")
