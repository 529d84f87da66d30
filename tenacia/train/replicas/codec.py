"""Typed values to JSON and back: the generic half of the replicas' wire form (``protocol.py``).

``to_json(value)`` turns dataclasses, tuples and int-keyed dicts into JSON-ready values;
``from_json(value, tp, where, hints)`` checks parsed JSON against the type ``tp`` and converts it,
or raises ``ProtocolError`` naming ``where`` (the message type and field) and what it expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Union


class ProtocolError(ValueError):
    """A header that is not a valid message; the text names the message type and the field."""


def to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any, tp: Any, where: str, hints: Callable[[type], dict[str, Any]]) -> Any:
    """``value`` (parsed JSON) checked and converted to type ``tp``; ``where`` names it in errors."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for i, option in enumerate(options):
            try:
                return from_json(value, option, where, hints)
            except ProtocolError:
                if i == len(options) - 1:
                    raise
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {_kind(value)}")
        fields, names = hints(tp), {f.name for f in dataclasses.fields(tp)}
        if unknown := sorted(set(value) - names):
            raise ProtocolError(f"{where}: unknown field {unknown[0]!r}")
        out = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                out[f.name] = from_json(value[f.name], fields[f.name], f"{where}.{f.name}", hints)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}: missing field {f.name!r}")
        return tp(**out)
    if origin is tuple:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list, got {_kind(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(v, args[0], f"{where}[{i}]", hints) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ProtocolError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(from_json(v, a, f"{where}[{i}]", hints) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {_kind(value)}")
        key_t, val_t = args
        out = {}
        for k, v in value.items():
            if key_t is int:
                if not (isinstance(k, str) and k.lstrip("-").isdigit()):
                    raise ProtocolError(f"{where}: key {k!r} is not an integer")
                k = int(k)
            out[k] = from_json(v, val_t, f"{where}[{k!r}]", hints)
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{where}: expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where}: expected an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ProtocolError(f"{where}: expected a string, got {_kind(value)}")
        return value
    raise ProtocolError(f"{where}: no conversion to {tp!r}")  # a type this module does not use


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]
