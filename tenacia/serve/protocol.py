"""The OpenAI request bodies the server accepts, and its error shape.

Nothing is silently ignored: of the fields OpenAI defines and tenacia does not use, those that
cannot change the output (``NO_OPS``: ``user``, ``metadata``, ``store: false`` ...) are accepted
and have no effect; those that would change it (``UNSUPPORTED``: ``tools``, ``audio`` ...) are a
400 naming the field. A field OpenAI does not define is tolerated (clients send their own). The
sampling fields it does use include vLLM's extensions (``top_k``,
``min_p``, ``repetition_penalty``, ``min_tokens``, ``stop_token_ids``, ``ignore_eos``). Types are checked strictly: ``"max_tokens": "10"`` is an error, as it
is for OpenAI. Every invalid input becomes ``ApiError(400, ...)``, rendered as OpenAI's
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .engine.grammar import compile_format
from .engine.sequence import InvalidRequest, SamplingParams

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 503: "server_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


# OpenAI fields that cannot change the output: accepted, no effect (docs/serving.md lists them)
NO_OPS = ("user", "metadata", "service_tier", "prompt_cache_key", "safety_identifier", "prediction", "store")
# OpenAI fields that would change the output and are not implemented: field -> why, or None when
# a value that means "off" is fine (``ALLOWED_OFF``)
UNSUPPORTED = {
    "functions": "the deprecated functions are not implemented: send tools",
    "function_call": "the deprecated function_call is not implemented: send tool_choice",
    "audio": "this server answers in text only",
    "modalities": "this server answers in text only",
    "web_search_options": "this server has no web search",
    "reasoning_effort": "this model has no reasoning effort setting",
    "verbosity": "this model has no verbosity setting",
    "store": "responses are not stored (store: false is accepted)",
}
ALLOWED_OFF = {"functions": ([],), "modalities": (["text"],),
               "store": (False,)}


def refuse_unsupported(req: BaseModel) -> None:
    """ApiError(400) for the first field of ``UNSUPPORTED`` the request sets to a value that
    would change the output (None and the "off" values of ``ALLOWED_OFF`` do not)."""
    extra = req.model_extra or {}
    for name, why in UNSUPPORTED.items():
        if name in extra and extra[name] is not None and extra[name] not in ALLOWED_OFF.get(name, ()):
            raise ApiError(400, f"'{name}' is not supported: {why}", name, "unsupported_parameter")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # not OpenAI's; vLLM's extension, 0 or -1: off
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension, used by benchmarks
    logit_bias: dict[str, float] | None = None  # token id (a JSON key, so a string) -> bias
    stop_token_ids: list[int] | None = None  # vLLM's extensions from here on
    min_tokens: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    # {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}: enforced by
    # constrained decoding (engine/grammar.py)
    response_format: dict[str, Any] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None  # OpenAI's function tools (serve/tools/)
    tool_choice: str | dict[str, Any] | None = None  # "none", "auto", "required" or a named function
    parallel_tool_calls: bool = True


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class TokenizeRequest(BaseModel):
    """vLLM's ``POST /tokenize``: a ``prompt``, or chat ``messages`` rendered by the chat template."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True  # prompt only (a rendered chat template has its own)
    add_generation_prompt: bool = True  # messages only


class DetokenizeRequest(BaseModel):
    """vLLM's ``POST /detokenize``."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str | None = None
    tokens: list[int]


def parse(raw: bytes, cls: type[BaseModel]) -> Any:
    """Body bytes -> a ``cls`` instance, or ApiError(400) naming the first bad field."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "the request body nests JSON too deeply") from None
    except ValueError as e:  # an integer longer than Python converts (4,300 digits), NaN, Infinity
        raise ApiError(400, f"the request body holds a value this server does not take: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except RecursionError:
        raise ApiError(400, "the request body nests JSON too deeply") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = _clean_loc(err["loc"])
        value = err.get("input")
        shown = json.dumps(value)[:80] if _jsonable(value) else type(value).__name__
        if err["type"] == "missing":
            raise ApiError(400, f"missing required parameter '{loc}'", loc) from None
        raise ApiError(400, f"invalid value for '{loc}': {err['msg']} (got {shown})", loc) from None


def _no_constant(name: str) -> None:
    """NaN, Infinity and -Infinity are not JSON (Python's parser takes them by default)."""
    raise ValueError(f"{name} is not a JSON number")


def _clean_loc(loc: tuple) -> str:
    """Pydantic's location without union branch names: ('prompt', 'str') -> 'prompt'."""
    parts = [str(p) if isinstance(p, str) else f"[{p}]" for p in loc]
    kept = [p for p in parts if p not in ("str", "int", "list[str]", "list[int]", "list[list[int]]",
                                          "list[dict[str,any]]", "bool", "float", "none")]
    return ".".join(kept).replace(".[", "[") or "body"


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def sampling_params(req: ChatRequest | CompletionRequest, max_tokens: int | None, logprobs: int | None,
                    prompt_logprobs: int | None = None, grammar: str | None = None) -> SamplingParams:
    """The engine's parameters for a request; ApiError(400) for a value out of range. ``grammar``:
    one the output must follow besides ``response_format`` (a forced tool call); not both."""
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    try:
        if req.response_format is not None and req.response_format.get("type") != "text" and grammar is not None:
            raise InvalidRequest("response_format", "response_format cannot be combined with a required or "
                                 "named tool_choice (both decide the output's form)")
        if grammar is None and req.response_format is not None:
            grammar = compile_format(req.response_format)
        return SamplingParams(n=req.n, max_tokens=max_tokens, temperature=req.temperature,
                              top_p=req.top_p, top_k=req.top_k, presence_penalty=req.presence_penalty,
                              frequency_penalty=req.frequency_penalty, stop=stop, seed=req.seed,
                              ignore_eos=req.ignore_eos, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                              logit_bias=_token_keys(req.logit_bias or {}),
                              stop_token_ids=list(req.stop_token_ids or []), min_tokens=req.min_tokens,
                              min_p=req.min_p, repetition_penalty=req.repetition_penalty, grammar=grammar)
    except InvalidRequest as e:
        raise ApiError(400, str(e), e.param) from None


def _token_keys(bias: dict[str, float]) -> dict[int, float]:
    """OpenAI's ``logit_bias`` keys are token ids written as strings: {"50256": -100}."""
    for key in bias:
        if not re.fullmatch(r"[0-9]{1,12}", key):
            raise ApiError(400, f"logit_bias keys must be token ids (non-negative integers, as strings), "
                           f"got {json.dumps(key)[:40]}", "logit_bias")
    return {int(key): value for key, value in bias.items()}
