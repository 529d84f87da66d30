"""The fewest tokens any value of a JSON schema can be written in, bounded from below: a request
whose ``max_tokens`` is under the bound could only end cut (``finish_reason: "length"``, the JSON
unfinished), so it is refused before anything runs.

Contract:
- ``SchemaBudget(token_bytes)``: the vocabulary as bytes, once per server; ``min_tokens(schema)``
  -> (a number of tokens every value of ``schema`` needs at least, the texts it counted).
- It refuses only what it proves. The texts counted are those every value must contain as the
  grammar writes them (``grammar.py``: llguidance writes a property's name as it is, no escapes,
  ", " and ": " between items): each required property's ``"name": `` (with the ", " before it
  for all but the first required one, as properties come in declared order), in every object a
  value must hold (required properties, ``$ref``, the first ``minItems`` array items). What
  has choices (``anyOf``, ``enum``, a type list) or no fixed text (strings, numbers) counts as
  no token.
- Each text needs at least ``cover(text)`` tokens: the fewest tokens of the vocabulary that
  spell it, the first allowed to start before it and the last to run on after it (a token
  partly in the text and partly outside). Tokens do not overlap, so one token can be counted in
  two neighbouring texts only by spanning everything between them: the bound is the sum of the
  covers less one per junction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from .schema_closure import _resolve
from .sequence import InvalidRequest

_PLAIN_KEY = re.compile(r"[ !#-\[\]-~]+")  # printable ASCII but '"' and '\': written one way only
_MAX_ITEMS_COUNTED = 1024


class SchemaBudget:
    def __init__(self, token_bytes: Iterable[bytes]):
        self.tokens: set[bytes] = set()
        self.prefixes: set[bytes] = set()
        self.suffixes: set[bytes] = set()
        for t in token_bytes:
            if not t:
                continue
            self.tokens.add(t)
            for i in range(1, len(t) + 1):
                self.prefixes.add(t[:i])
                self.suffixes.add(t[-i:])
        self.joined = b"\x00".join(self.tokens)  # "inside one token": a text without \x00 found here

    def cover(self, text: bytes) -> int:
        """The fewest tokens that spell ``text``, the first and last allowed to run past its ends."""
        n = len(text)
        if n == 0:
            return 0
        if text in self.joined:
            return 1
        best = [0] + [n + 1] * n  # best[j]: tokens covering text[:j] exactly, the first maybe from before
        for j in range(1, n + 1):
            if text[:j] in self.suffixes:
                best[j] = 1
                continue
            best[j] = min((best[i] + 1 for i in range(1, j) if text[i:j] in self.tokens), default=n + 1)
        ends = [best[i] + 1 for i in range(1, n) if text[i:] in self.prefixes]
        return min([best[n], *ends])

    def min_tokens(self, schema: Any) -> tuple[int, list[str]]:
        """(tokens every value of ``schema`` needs at least, the texts counted); module docstring."""
        texts = list(_fixed_texts(schema, schema, frozenset()))
        if not texts:
            return 0, []
        covers = sum(self.cover(t.encode()) for t in texts)
        return max(0, covers - (len(texts) - 1)), texts

    def refuse_over(self, response_format: Any, max_tokens: int, param: str) -> None:
        """InvalidRequest naming ``param`` when every value of a ``json_schema`` response
        format needs more than ``max_tokens`` tokens: it could only end cut."""
        if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
            return
        try:
            need, texts = self.min_tokens((response_format.get("json_schema") or {}).get("schema"))
        except RecursionError:
            return  # compile_format refused it already
        if need > max_tokens:
            shown = ", ".join(repr(t) for t in texts[:4]) + (f" and {len(texts) - 4} more" if len(texts) > 4 else "")
            raise InvalidRequest(param, f"the JSON schema cannot close within {param}={max_tokens}: every value it "
                                 f"allows takes at least {need} tokens (it must write {shown}); allow at least "
                                 f"{need} tokens or require less")


def _fixed_texts(node: Any, root: Any, refs: frozenset[str]):
    """The texts every value of ``node`` writes, each in a place of its own."""
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = _resolve(root, ref) if ref.startswith("#") else None
        if ref not in refs and isinstance(target, dict):
            yield from _fixed_texts(target, root, refs | {ref})
        return
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        required = [r for r in dict.fromkeys(node.get("required") or []) if isinstance(r, str)]
        ordered = [k for k in properties if k in required] + [k for k in required if k not in properties]
        for i, key in enumerate(ordered):
            if not _PLAIN_KEY.fullmatch(key):
                continue
            yield (", " if i > 0 and key in properties else "") + json.dumps(key) + ": "
            if key in properties:
                yield from _fixed_texts(properties[key], root, refs)
    elif kind == "array":
        count = node.get("minItems")
        count = min(count, _MAX_ITEMS_COUNTED) if isinstance(count, int) and not isinstance(count, bool) else 0
        prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
        items = node.get("items") if isinstance(node.get("items"), dict) else None
        for i in range(count):
            if i < len(prefix):
                yield from _fixed_texts(prefix[i], root, refs)
            elif items is not None and not prefix:
                yield from _fixed_texts(items, root, refs)
