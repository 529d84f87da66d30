"""One generated sequence and the parameters that steer its sampling.

A request with ``n`` choices becomes ``n`` sequences that share a request id and differ by
``index``. Each sequence owns a ``torch.Generator`` seeded from the request's seed and its index,
so its tokens depend only on its own logits, never on what else is in the batch.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import torch

MAX_N = 16
MAX_LOGPROBS = 20
MAX_STOP = 16
MAX_STOP_TOKEN_IDS = 64
MAX_LOGIT_BIAS = 300  # OpenAI's limit
# The ranges below are those the sampler's float32 arithmetic carries: logits / temperature and
# logits / repetition_penalty stay finite for any logit a model produces, so no request can turn
# a row of probabilities into NaN (tests/serve/test_hostile.py).
MIN_TEMPERATURE = 1e-3  # below it (but above 0, greedy) logits / temperature overflows float32
REPETITION_PENALTY = (1e-2, 1e2)
MAX_TOP_K = (1 << 31) - 1  # any k at least the vocabulary keeps every token
SEED_RANGE = (-(1 << 63), 1 << 63)  # int64, as OpenAI's seed


class InvalidRequest(ValueError):
    """A request the engine will never run. ``param`` names the offending field."""

    def __init__(self, param: str | None, message: str):
        self.param = param
        super().__init__(message)


def _require(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidRequest(param, message)


@dataclass(kw_only=True, slots=True)
class SamplingParams:
    """OpenAI's sampling fields and vLLM's extensions. ``temperature == 0`` means greedy;
    ``top_k <= 0``, ``min_p == 0`` and ``repetition_penalty == 1`` are off. Token ids are checked
    against the vocabulary by ``check_request`` (the engine knows its size, this class does not)."""

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)  # end the sequence like EOS
    ignore_eos: bool = False
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    min_p: float = 0.0  # drop tokens less likely than min_p x the most likely one (sampled rows)
    repetition_penalty: float = 1.0  # HF's: shrinks the logits of tokens in the prompt or output
    min_tokens: int = 0  # EOS and stop_token_ids masked, stop strings not looked for, until this many tokens
    seed: int | None = None
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's logprob and the top k
    # None: none; k >= 0: every prompt token's logprob (the first has none) and its top k, as
    # ``logprobs`` for a generated token (completions' ``echo``). Such a prompt is prefilled whole,
    # never taken from the prefix cache, so that every one of its tokens is scored.
    prompt_logprobs: int | None = None
    # an llguidance grammar (``grammar.compile_format``, from ``response_format``): the output
    # must match it, token by token
    grammar: str | None = None

    def __post_init__(self) -> None:
        _require(1 <= self.n <= MAX_N, "n", f"n must be an integer in [1, {MAX_N}], got {self.n}")
        _require(self.max_tokens >= 0, "max_tokens", f"max_tokens must be at least 0, got {self.max_tokens}")
        _require(self.temperature == 0.0 or MIN_TEMPERATURE <= self.temperature <= 2.0, "temperature",
                 f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, 2], got {self.temperature}")
        _require(0.0 < self.top_p <= 1.0, "top_p", f"top_p must be in (0, 1], got {self.top_p}")
        _require(-1 <= self.top_k <= MAX_TOP_K, "top_k",
                 f"top_k must be -1 or 0 (disabled) or an integer in [1, {MAX_TOP_K}], got {self.top_k}")
        _require(self.seed is None or SEED_RANGE[0] <= self.seed < SEED_RANGE[1], "seed",
                 f"seed must be a 64-bit signed integer, got {self.seed}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _require(-2.0 <= value <= 2.0, name, f"{name} must be in [-2, 2], got {value}")
        _require(len(self.stop) <= MAX_STOP, "stop", f"at most {MAX_STOP} stop strings, got {len(self.stop)}")
        _require(all(isinstance(s, str) and s for s in self.stop), "stop", "stop strings must be non-empty strings")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _require(value is None or 0 <= value <= MAX_LOGPROBS, name,
                     f"{name} must be in [0, {MAX_LOGPROBS}], got {value}")
        self._check_extensions()
        _require(self.grammar is None or self.min_tokens == 0, "min_tokens",
                 "min_tokens cannot be combined with response_format: the format decides where the output ends")

    def _check_extensions(self) -> None:
        """logit_bias, min_p, repetition_penalty, min_tokens and stop_token_ids."""
        _require(len(self.logit_bias) <= MAX_LOGIT_BIAS, "logit_bias",
                 f"logit_bias may hold at most {MAX_LOGIT_BIAS} entries, got {len(self.logit_bias)}")
        for token, bias in self.logit_bias.items():
            _require(_is_token_id(token), "logit_bias", f"logit_bias keys must be token ids (integers >= 0), got {token!r}")
            _require(-100.0 <= bias <= 100.0, "logit_bias",
                     f"logit_bias values must be in [-100, 100], got {bias} for token {token}")
        _require(0.0 <= self.min_p <= 1.0, "min_p", f"min_p must be in [0, 1], got {self.min_p}")
        low, high = REPETITION_PENALTY
        _require(low <= self.repetition_penalty <= high, "repetition_penalty",
                 f"repetition_penalty must be in [{low}, {high}] (1 is off), got {self.repetition_penalty}")
        _require(0 <= self.min_tokens <= self.max_tokens, "min_tokens",
                 f"min_tokens must be in [0, max_tokens] = [0, {self.max_tokens}], got {self.min_tokens}")
        _require(len(self.stop_token_ids) <= MAX_STOP_TOKEN_IDS, "stop_token_ids",
                 f"at most {MAX_STOP_TOKEN_IDS} stop_token_ids, got {len(self.stop_token_ids)}")
        _require(all(_is_token_id(t) for t in self.stop_token_ids), "stop_token_ids",
                 f"stop_token_ids must be token ids (integers >= 0), got {self.stop_token_ids}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def repetition_penalized(self) -> bool:
        return self.repetition_penalty != 1.0


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Status(enum.Enum):
    WAITING = "waiting"  # no cache blocks yet (new, or preempted and to be recomputed)
    RUNNING = "running"  # holds blocks; prefilling or decoding
    FINISHED = "finished"


@dataclass(kw_only=True, slots=True)
class TokenLogprob:
    """The chosen token's log-probability under the model, and the ``k`` most likely tokens. Both
    are None for a prompt's first token, which nothing before it predicts."""

    token_id: int
    logprob: float | None
    top: list[tuple[int, float]] | None


@dataclass(slots=True, eq=False)
class Sequence:
    """Tokens, cache blocks and sampling state of one choice of one request."""

    seq_id: int
    request_id: str
    index: int  # choice index within the request
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    eos_ids: frozenset[int]
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    num_cached: int = 0  # tokens whose keys/values are in the cache
    registered: int = 0  # leading blocks of block_table registered for prefix caching
    finish_reason: str | None = None
    arrival: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_token_at: float | None = None
    seen: torch.Tensor | None = None  # (vocab,) bool, tokens of prompt and output: repetition_penalty's
    seen_upto: int = 0  # how many of ``tokens`` ``seen`` holds (it grows by the new ones each step)
    # prompt tokens scored so far (params.prompt_logprobs): entry p is token p's; the first is None
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=lambda: [None])
    matcher: Any = None  # the grammar's state (llguidance LLMatcher) when params.grammar is set

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def prefilled(self) -> bool:
        """True once every token but the last sampled one is cached: the next step decodes it.
        A preempted sequence loses its cache and is prefilled again, outputs included."""
        return bool(self.output_ids) and self.num_cached == self.num_tokens - 1

    @property
    def scores_prompt(self) -> bool:
        """True while some prompt token still needs its logprob (``params.prompt_logprobs``)."""
        return self.params.prompt_logprobs is not None and len(self.prompt_logprobs) < len(self.prompt_ids)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED


def make_generator(seed: int | None, index: int, device: torch.device) -> torch.Generator:
    """A generator for choice ``index``: seeded from (seed, index) when a seed is given, so that
    choice ``i`` of a seeded request is reproducible; from fresh entropy otherwise."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed((seed * 1_000_003 + index) % (1 << 63))
    return gen
