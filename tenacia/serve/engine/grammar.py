"""Structured outputs: a ``response_format`` becomes a grammar, and each constrained sequence's
logits are masked to the tokens its grammar allows next (constrained decoding).

The grammar library is llguidance (``pip install llguidance``): one self-contained abi3 wheel
with no dependencies that runs on any CPU (Rust, no torch, no compiler at run time), the engine
behind vLLM's ``guidance`` backend and llama.cpp's ``--grammar`` with llguidance; its JSON Schema
compiler refuses the keywords it cannot enforce by name (``Unimplemented keys: ["not"]``).
xgrammar 0.2.8, the other candidate, pulls in triton, apache-tvm-ffi and transformers for this
Python, and its mask kernels are written for GPUs.

Contract:
- ``compile_format`` runs in the server process and needs no tokenizer: a ``response_format``
  -> an llguidance grammar string, or ``InvalidRequest`` naming what is wrong ("text" -> None).
  A schema no finite value satisfies is refused first, naming the place and why
  (``refuse_unclosable``, ``schema_closure.py``).
  JSON is compact (", " and ": " between items, no other whitespace), so a model cannot wander
  into endless whitespace.
- ``Grammars`` runs in the engine: its tokenizer view is built once (``prepare``; ~1.5 s for a
  49k vocabulary), then ``matcher(grammar)`` starts the state of one sequence.
- ``mask_logits`` sets the logits of forbidden tokens to -inf, in the rows of constrained
  sequences only; ``advance`` moves a sequence's state past its new token and says whether the
  grammar is complete (the sequence then ends with ``stop``; only EOS could follow).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

from .schema_closure import why_unclosable
from .sequence import InvalidRequest, Sequence

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
FORMATS = ("text", "json_object", "json_schema")


def compile_format(response_format: Any, param: str = "response_format") -> str | None:
    """OpenAI's ``response_format`` (``{"type": "text" | "json_object" | "json_schema",
    "json_schema": {"name", "schema", "strict"}}``) -> an llguidance grammar, None for text."""
    from llguidance import LLMatcher

    if not isinstance(response_format, dict) or response_format.get("type") not in FORMATS:
        got = response_format.get("type") if isinstance(response_format, dict) else response_format
        raise InvalidRequest(f"{param}.type", f"{param}.type must be one of {', '.join(FORMATS)}, got {got!r}")
    kind = response_format["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    else:
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequest(f"{param}.json_schema", f"{param}.json_schema must be an object "
                                 "{'name': ..., 'schema': {...}, 'strict': true}")
        schema = spec.get("schema", {})
    refuse_unclosable(schema, f"{param}.json_schema.schema")
    try:
        grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_OPTIONS)
    except ValueError as e:
        raise InvalidRequest(f"{param}.json_schema.schema", f"the JSON schema is not valid: {e}") from None
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise InvalidRequest(f"{param}.json_schema.schema",
                             f"the JSON schema cannot be enforced: {messages[0]}")
    return grammar


def refuse_unclosable(schema: Any, param: str) -> None:
    """InvalidRequest naming the place in ``schema`` that no finite JSON value can satisfy
    (``schema_closure.py``): refused before generating, not found at ``max_tokens``."""
    try:
        failure = why_unclosable(schema)
    except RecursionError:
        raise InvalidRequest(param, "the JSON schema nests too deeply") from None
    if failure is not None:
        where, why = failure
        raise InvalidRequest(param, f"the JSON schema cannot close (no finite JSON value satisfies it): at {where}, {why}")


class Grammars:
    """The engine's side: llguidance's view of the tokenizer and a matcher per sequence."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_ids: frozenset[int]):
        self.tokenizer, self.vocab_size, self.eos_ids = tokenizer, vocab_size, sorted(eos_ids)
        self._ll_tokenizer: Any = None
        self._executor: Any = None
        self._shifts = torch.arange(32, dtype=torch.int32)

    def prepare(self) -> None:
        """Build the tokenizer view now (it is otherwise built by the first constrained request)."""
        if self._ll_tokenizer is None:
            from llguidance import LLExecutor, LLTokenizer

            self._ll_tokenizer = LLTokenizer(self.tokenizer.to_str(), n_vocab=self.vocab_size,
                                             eos_token=self.eos_ids or None)
            self._executor = LLExecutor(max(1, torch.get_num_threads()))

    def matcher(self, grammar: str) -> Any:
        """A fresh state for ``grammar`` (from ``compile_format``); InvalidRequest if it is bad."""
        from llguidance import LLMatcher

        self.prepare()
        matcher = LLMatcher(self._ll_tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest("response_format", f"the grammar cannot be used: {matcher.get_error()}")
        return matcher

    def mask_logits(self, logits: Tensor, seqs: list[Sequence]) -> Tensor:
        """logits: (B, V) float32; rows of constrained sequences get -inf where their grammar
        forbids the token. Modified in place and returned."""
        rows = [i for i, s in enumerate(seqs) if s.matcher is not None]
        if not rows:
            return logits
        words = (self.vocab_size + 31) // 32
        bits = torch.zeros(len(rows), words, dtype=torch.int32)  # (R, V / 32): bit t % 32 of word t // 32
        self._executor.unsafe_compute_mask_ptr([(seqs[i].matcher, j) for j, i in enumerate(rows)],
                                               bits.data_ptr(), words * 4, len(rows))
        allowed = ((bits.unsqueeze(-1) >> self._shifts) & 1).view(len(rows), -1)[:, :logits.size(1)]  # (R, V)
        idx = torch.tensor(rows, device=logits.device)
        logits[idx] = logits[idx].masked_fill(allowed.to(logits.device) == 0, float("-inf"))
        return logits


def advance(matcher: Any, token: int) -> bool:
    """Move ``matcher`` past ``token``; True when the grammar is complete. ValueError when the
    token breaks the grammar (it cannot, under ``mask_logits``, unless the state was lost)."""
    if not matcher.consume_token(token):
        raise ValueError(f"token {token} does not fit the response format: {matcher.get_error()}")
    return matcher.is_stopped()
