"""Tool calling: the chat template shows the model its ``tools``, the model answers with calls
in its own format, and the server turns them into OpenAI ``tool_calls``.

Formats (``FORMATS``; one module each, ``calls.py`` holds their common contract):
- ``hermes`` (Hermes, Qwen): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``;
- ``llama3_json`` (Llama 3.1-3.3): ``{"name": ..., "parameters": {...}}``, possibly after
  ``<|python_tag|>``, several separated by ``;``;
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``, or v11's (2025)
  ``[TOOL_CALLS]name[ARGS]{...}`` a call; ids of 9 letters/digits;
- ``pythonic`` (Llama 3.2 / Llama 4 pythonic templates): ``[f(a=1, b="x"), g()]``.

Contract:
- ``tool_format`` picks the format once, at start: the server's ``tool_parser`` setting, or for
  "auto" the chat template's own markup (``[TOOL_CALLS]``: mistral; ``<tool_call>``: hermes;
  ``<|python_start|>`` or the pythonic example ``func_name1(``: pythonic; ``<|python_tag|>`` or
  the ``ipython`` role: llama3_json; else hermes).
- ``check_tools`` (``request.py``) validates a request's ``tools`` and ``tool_choice``.
- ``tool_choice``: "none" shows no tools and parses nothing; "auto" parses what the model writes;
  "required" and a named function are enforced by a grammar in the format's own syntax
  (``tool_grammar``: llguidance's Lark with each function's parameters as a JSON schema), so even
  a model never trained on tools writes a valid call (not in the pythonic format: a 400).
- ``make_parser`` gives a choice's parser; streamed deltas equal the whole answer (``calls.py``).
"""

from __future__ import annotations

from ..config import TOOL_PARSERS
from ..engine.grammar import refuse_unclosable
from ..engine.sequence import InvalidRequest
from . import hermes, llama3_json, mistral, pythonic
from .calls import ToolCallParser
from .hermes import HermesParser
from .llama3_json import Llama3JsonParser
from .mistral import MistralParser
from .pythonic import PythonicParser
from .request import check_tools

FORMATS = TOOL_PARSERS  # "auto" and the four formats
_MODULES = {"hermes": hermes, "llama3_json": llama3_json, "mistral": mistral, "pythonic": pythonic}
_PARSERS = {"hermes": HermesParser, "llama3_json": Llama3JsonParser, "mistral": MistralParser,
            "pythonic": PythonicParser}

__all__ = ["FORMATS", "HermesParser", "Llama3JsonParser", "MistralParser", "PythonicParser", "ToolCallParser", "check_tools", "make_parser", "tool_format", "tool_grammar"]


def tool_format(setting: str, template_source: str) -> str:
    """The format of the served model's calls: ``setting`` unless "auto" (module docstring)."""
    if setting != "auto":
        return setting
    if mistral.TAG in template_source:
        return "mistral"
    if hermes.OPEN in template_source:
        return "hermes"
    if pythonic.START in template_source or "func_name1(" in template_source:
        return "pythonic"
    if llama3_json.TAG in template_source or "ipython" in template_source:
        return "llama3_json"
    return "hermes"


def make_parser(fmt: str, parallel: bool = True) -> ToolCallParser:
    return _PARSERS[fmt](parallel)


def tool_grammar(fmt: str, tools: list[dict], choice: str, parallel: bool, template_source: str = "") -> str | None:
    """The llguidance grammar forcing a call in format ``fmt`` ("required": any tool, one or more
    when ``parallel``; a name: that function, once); None for "auto". Mistral's calls take the
    form the chat template writes: v11's ``[TOOL_CALLS]name[ARGS]{...}`` when it has ``[ARGS]``."""
    from llguidance import LLMatcher

    if choice == "auto":
        return None
    chosen = [t for t in tools if choice == "required" or t["function"]["name"] == choice]
    for i, tool in enumerate(tools):
        if tool in chosen and "parameters" in tool["function"]:
            refuse_unclosable(tool["function"]["parameters"], f"tools[{i}].function.parameters")
    many = parallel and choice == "required"
    if fmt == "mistral":
        lark = mistral.grammar(chosen, many, v11=mistral.ARGS in template_source)
    else:
        lark = _MODULES[fmt].grammar(chosen, many)
    grammar = LLMatcher.grammar_from_lark(lark)
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise InvalidRequest("tools", f"the tools' parameters cannot be enforced: {messages[0]}")
    return grammar
