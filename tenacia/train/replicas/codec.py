"""Typed values to JSON and back: the generic half of the replicas' wire form (``protocol.py``).

``to_json(value, tp, hints)`` turns dataclasses, tuples and int-keyed dicts into JSON-ready values;
``from_json(value, tp, where, hints)`` checks parsed JSON against the type ``tp`` and converts it,
or raises ``ProtocolError`` naming ``where`` (the message type and field) and what it expected.

Long integer tuples: a value whose declared type is ``tuple[int, ...]`` and that holds at least
``PACK_MIN`` items, each in [-2**31, 2**31), goes as ``{"ints": PACKED}`` (``pack_ints``): first differences, zigzag, at the
narrowest of 1, 2, 4 or 8 bytes, zlib, base64. A diloco round's vote carries its whole batch of
sample ids and a verdict every member's positions (3,200 of each at H = 100): as JSON text they
were 27 KB and 18 KB a message, most of the bytes a round of the top-k exchange sent
(docs/benchmarks.md); packed, a contiguous run of positions is a few dozen bytes and a shuffled
batch about 2.7 bytes an id. Only the declared type decides, so a tuple under ``Any`` stays a list.
"""

from __future__ import annotations

import base64
import dataclasses
import types
import typing
import zlib
from collections.abc import Callable
from typing import Any, Union

import numpy as np

PACK_MIN = 32  # integer tuples at least this long are packed
_BOUND = 1 << 31  # packed values lie in [-_BOUND, _BOUND): their differences and zigzags fit 64 bits
_WIDTHS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


class ProtocolError(ValueError):
    """A header that is not a valid message; the text names the message type and the field."""


def pack_ints(values: typing.Sequence[int]) -> str:
    """``values`` (each in [-2**31, 2**31)) as ``"<width>:<base64>"`` (module docstring)."""
    d = np.diff(np.asarray(values, dtype=np.int64), prepend=np.int64(0))
    z = ((d << 1) ^ (d >> 63)).astype(np.uint64)  # zigzag: small magnitudes of either sign stay small
    top = int(z.max()) if len(z) else 0
    width = next(w for w in (1, 2, 4, 8) if top < 1 << (8 * w))
    return f"{width}:" + base64.b64encode(zlib.compress(z.astype(_WIDTHS[width]).tobytes(), 6)).decode()


def unpack_ints(text: str) -> tuple[int, ...]:
    """``pack_ints``'s inverse; ``ValueError`` on a malformed string."""
    width, _, body = text.partition(":")
    if width not in ("1", "2", "4", "8"):
        raise ValueError(f"packed integers of width {width!r}")
    z = np.frombuffer(zlib.decompress(base64.b64decode(body, validate=True)), dtype=_WIDTHS[int(width)])
    z = z.astype(np.int64)
    return tuple(int(x) for x in np.cumsum((z >> 1) ^ -(z & 1)))


def _is_int_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple and typing.get_args(tp) == (int, Ellipsis)


def to_json(value: Any, tp: Any = Any, hints: Callable[[type], dict[str, Any]] | None = None) -> Any:
    """``value`` as JSON-ready data; ``tp`` its declared type (``hints`` gives a dataclass's field
    types), which decides where integer tuples are packed (module docstring)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType) and value is not None:
        options = [a for a in args if a is not type(None)]
        tp = options[0] if len(options) == 1 else Any
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(value):
        fields = hints(type(value)) if hints is not None else {}
        return {f.name: to_json(getattr(value, f.name), fields.get(f.name, Any), hints)
                for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        if _is_int_tuple(tp) and len(value) >= PACK_MIN and all(type(v) is int and -_BOUND <= v < _BOUND for v in value):
            return {"ints": pack_ints(value)}
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        val_t = args[1] if origin is dict and len(args) == 2 else Any
        return {str(k): to_json(v, val_t, hints) for k, v in value.items()}
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
        if isinstance(value, dict) and _is_int_tuple(tp) and set(value) == {"ints"} and isinstance(value["ints"], str):
            try:
                return unpack_ints(value["ints"])
            except (ValueError, zlib.error) as e:
                raise ProtocolError(f"{where}: packed integers that do not unpack ({e})") from None
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
