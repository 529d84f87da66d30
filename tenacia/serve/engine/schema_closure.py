"""Whether a JSON schema can close: whether some finite JSON value satisfies it. Under a schema
that cannot (a required recursion with no base case, ``minItems`` above ``maxItems``, types no
value has), constrained decoding would write until ``max_tokens`` or reach a dead end, so such a
schema is refused before anything is generated, with the place (a JSON Pointer) and the reason.

Contract:
- ``why_unclosable(schema)`` -> None when some value may satisfy ``schema``, else
  ``(pointer, reason)`` for the innermost place that cannot. It refuses only what it proves: a
  keyword it does not read (``pattern`` against lengths, ``multipleOf`` in a range, ``not``)
  counts as satisfiable here, and llguidance, which compiles the schema next, refuses more
  (by message, without a path). A ``$ref`` it cannot resolve (another document, an anchor)
  counts as satisfiable.
- Recursion: the ``$ref`` targets that close are a least fixpoint: none at first, then every
  target whose schema closes given the targets found so far, until none is added. A target never
  found closes only through itself: each of its values would have to hold another.
- A value of a type closes when that type's keywords allow one: a string's length bounds; a
  number's bounds (an integer between them, for ``integer``); an array's bounds and its first
  ``minItems`` items (``prefixItems``, then ``items``) and ``contains``; an object's bounds and
  each required property (declared and closable, or allowed by ``additionalProperties``).
  Without ``type`` every type is a candidate (a keyword constrains only its own type's values).
  ``allOf``: every part closes and the parts' types meet; ``anyOf``/``oneOf``: some branch
  closes; ``enum``/``const``: some value is of a candidate type.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import unquote

Failure = tuple[str, str]  # (JSON Pointer into the schema, why no value fits there)
TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
_UNKNOWN = object()


def why_unclosable(schema: Any) -> Failure | None:
    """None when ``schema`` may be satisfied, else where and why it cannot (module docstring).
    RecursionError for a schema nested deeper than Python's stack."""
    refs = set(_refs(schema))
    closing: set[str] = set()
    grew = True
    while grew:  # the least fixpoint of "closes, given the targets that close"
        grew = False
        for ref in sorted(refs - closing):
            target = _resolve(schema, ref)
            if target is _UNKNOWN or _Closure(schema, closing, explain=False).closes(target, ref) is None:
                closing.add(ref)
                grew = True
    return _Closure(schema, closing, explain=True).closes(schema, "#")


class _Closure:
    """One pass over a schema, given the ``$ref`` targets known to close. ``explain``: follow a
    target that does not close to the place that stops it (each target once)."""

    def __init__(self, root: Any, closing: set[str], explain: bool):
        self.root, self.closing, self.explain = root, closing, explain
        self.followed: dict[str, Failure | None] = {}

    def closes(self, node: Any, ptr: str) -> Failure | None:
        if node is False:
            return ptr, "the schema is false: no value matches it"
        if not isinstance(node, dict):
            return None  # true, or no schema at all (llguidance says so)
        for i, part in enumerate(_list(node.get("allOf"))):
            if failure := self.closes(part, f"{ptr}/allOf/{i}"):
                return failure
        if isinstance(node.get("$ref"), str) and (failure := self.ref(node["$ref"], ptr)):
            return failure
        for key in ("anyOf", "oneOf"):
            if key in node and isinstance(node[key], list):
                failures = [self.closes(b, f"{ptr}/{key}/{i}") for i, b in enumerate(node[key])]
                if not failures:
                    return ptr, f"{key} is empty: there is no branch to match"
                if all(failures):
                    first = failures[0]
                    return first if len(failures) == 1 else (
                        ptr, f"none of the {len(failures)} branches of {key} can close (the first, at "
                        f"{first[0]}: {first[1]})")
        types = self.types(node, ptr)
        if isinstance(types, tuple) or not types:  # a Failure, or no type it knows (llguidance's to say)
            return types or None
        failures = [self.closes_as(node, t, ptr) for t in types]
        if all(failures):
            named = [t for t in types if not (t == "integer" and "number" in types)]  # number admits integers
            last = failures[types.index(named[0])]
            return last if len(named) == 1 else (
                ptr, f"no value of its types ({', '.join(named)}) fits (as {named[0]}: {last[1]})")
        return None

    def ref(self, ref: str, ptr: str) -> Failure | None:
        if not ref.startswith("#") or ref in self.closing or _resolve(self.root, ref) is _UNKNOWN:
            return None
        if not self.explain:
            return ptr, f"{ref} does not close"
        if ref in self.followed:  # met again while following it: the recursion is required
            return self.followed[ref] or (ptr, f"every value of {ref} must hold another {ref} here "
                                          "(a required recursion with no base case)")
        self.followed[ref] = None
        found = self.closes(_resolve(self.root, ref), ref)
        self.followed[ref] = found or (ptr, f"{ref} cannot close")
        return self.followed[ref]

    def types(self, node: dict, ptr: str) -> list[str] | Failure:
        """The candidate types of ``node``: its ``type`` met with its ``allOf`` parts' and
        narrowed to its ``enum``/``const`` values' types; a Failure when none is left."""
        types, whence = _types(node.get("type")), "its type" if "type" in node else ""
        for i, part in enumerate(_list(node.get("allOf"))):
            if isinstance(part, dict) and "type" in part:
                met = [t for t in types if t in _types(part["type"])]
                if not met:
                    return ptr, (f"{whence} ({', '.join(types)}) and allOf/{i}'s type "
                                 f"({', '.join(_types(part['type']))}) have no value in common")
                types, whence = met, f"{whence} and allOf/{i}'s type" if whence else f"allOf/{i}'s type"
        values = [node["const"]] if "const" in node else node.get("enum")
        if isinstance(values, list):
            if not values:
                return ptr, "enum is empty: no value is allowed"
            met = [t for t in types if any(t in _value_types(v) for v in values)]
            if not met:
                key = "const" if "const" in node else "enum"
                return ptr, f"no value of its {key} is of {whence or 'its type'} ({', '.join(types)})"
            return met
        return types

    def closes_as(self, node: dict, kind: str, ptr: str) -> Failure | None:
        """Whether a value of type ``kind`` meets ``node``'s keywords for that type."""
        if "enum" in node or "const" in node:
            return None  # the values were checked against the types; their other keywords are not read
        if kind == "string":
            return _bounds(node, ptr, "minLength", "maxLength")
        if kind in ("integer", "number"):
            return _number(node, ptr, kind)
        if kind == "array":
            return _bounds(node, ptr, "minItems", "maxItems") or self.array_items(node, ptr)
        if kind == "object":
            return _bounds(node, ptr, "minProperties", "maxProperties") or self.required(node, ptr)
        return None

    def array_items(self, node: dict, ptr: str) -> Failure | None:
        """The first ``minItems`` items (and what ``contains`` asks for) can be written."""
        need = _count(node.get("minItems"))
        if isinstance(node.get("prefixItems"), list):
            prefix_key, rest_key = "prefixItems", "items"
        elif isinstance(node.get("items"), list):  # draft 4-7's tuple form
            prefix_key, rest_key = "items", "additionalItems"
        else:
            prefix_key, rest_key = "", "items"
        prefix = node.get(prefix_key, [])
        for i in range(min(need, len(prefix))):
            if failure := self.closes(prefix[i], f"{ptr}/{prefix_key}/{i}"):
                return failure
        if need > len(prefix) and rest_key in node and not isinstance(node[rest_key], list):
            if failure := self.closes(node[rest_key], f"{ptr}/{rest_key}"):
                return failure
        if "contains" in node and _count(node.get("minContains"), 1) > 0:
            return self.closes(node["contains"], f"{ptr}/contains")
        return None

    def required(self, node: dict, ptr: str) -> Failure | None:
        """Each required property is declared and closes, or another property may take its name."""
        names = [r for r in _list(node.get("required")) if isinstance(r, str)]
        most = node.get("maxProperties")
        if _is_count(most) and len(set(names)) > most:
            return ptr, f"it requires {len(set(names))} properties but maxProperties is {most}"
        properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        for name in names:
            if name in properties:
                if failure := self.closes(properties[name], f"{ptr}/properties/{_escape(name)}"):
                    return failure
            elif "patternProperties" not in node and "additionalProperties" in node:
                extra = node["additionalProperties"]
                if extra is False:
                    return ptr, f"required property {name!r} is not among its properties and additionalProperties is false"
                if failure := self.closes(extra, f"{ptr}/additionalProperties"):
                    return failure
        return None


def _bounds(node: dict, ptr: str, low: str, high: str) -> Failure | None:
    lo, hi = node.get(low), node.get(high)
    if _is_count(lo) and _is_count(hi) and lo > hi:
        return ptr, f"{low} ({lo}) is greater than {high} ({hi})"
    return None


def _number(node: dict, ptr: str, kind: str) -> Failure | None:
    """A number (an integer, for ``integer``) lies within the bounds; booleans (draft 4's
    exclusive flags) are read as flags on ``minimum``/``maximum``."""
    lo, lo_open = _bound(node, "minimum", "exclusiveMinimum", max)
    hi, hi_open = _bound(node, "maximum", "exclusiveMaximum", min)
    if lo is None or hi is None:
        return None
    if lo > hi or (lo == hi and (lo_open or hi_open)):
        return ptr, f"its lower bound ({lo}{', exclusive' if lo_open else ''}) is not below its upper bound ({hi}{', exclusive' if hi_open else ''})"
    if kind == "integer" and math.isfinite(lo) and math.isfinite(hi):
        first = math.floor(lo) + 1 if lo_open or lo != math.floor(lo) else math.floor(lo)
        last = math.ceil(hi) - 1 if hi_open or hi != math.ceil(hi) else math.ceil(hi)
        if first > last:
            return ptr, f"no integer lies between its bounds ({lo} and {hi})"
    return None


def _bound(node: dict, inclusive: str, exclusive: str, tighter) -> tuple[float | None, bool]:
    value, open_ = node.get(inclusive), False
    value = value if _is_number(value) else None
    excl = node.get(exclusive)
    if excl is True and value is not None:
        open_ = True
    elif _is_number(excl) and (value is None or tighter(excl, value) == excl):
        value, open_ = excl, True
    return value, open_


def _types(value: Any) -> list[str]:
    """``type`` -> the candidate types ("number" admits integers too); every type when absent."""
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else TYPES
    out = [t for t in TYPES if t in names]
    if "number" in out and "integer" not in out:
        out.insert(out.index("number"), "integer")
    return out


def _value_types(value: Any) -> tuple[str, ...]:
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("boolean",)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return ("integer", "number")
    if isinstance(value, float):
        return ("number",)
    return {str: ("string",), list: ("array",), dict: ("object",)}.get(type(value), ())


def _refs(node: Any):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#"):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(root: Any, ref: str) -> Any:
    """The subschema a local ``$ref`` ("#", "#/$defs/a") names; _UNKNOWN for any other."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return _UNKNOWN
    node = root
    for part in ref[2:].split("/"):
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _UNKNOWN
    return node


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: Any, default: int = 0) -> int:
    return value if _is_count(value) else default
