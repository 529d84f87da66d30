"""The engine: requests in, tokens and text out, one ``step()`` at a time.

``step()`` is schedule, run, postprocess. It is synchronous and single-threaded; ``ProcessEngine``
drives it in a process of its own for the HTTP server, and tests and benchmarks may call it
directly.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tokenizers import Tokenizer

from ...model.deepseek import DeepSeekV3
from ...model.llama import Llama
from ..config import EngineConfig
from .attention import PagedAttention
from .backend import TorchBackend
from .cpu.backend import cpu_backend
from .detokenizer import Detokenizer, TextState
from .grammar import Grammars, advance
from .kv_cache import CacheSpec, PagedKVCache
from .packed import PackedLlama
from .packed_deepseek import PackedDeepSeek
from .runner import ModelRunner
from .scheduler import Batch, Scheduler
from .sequence import InvalidRequest, SamplingParams, Sequence, TokenLogprob, make_generator


@dataclass(slots=True)
class ChoiceDelta:
    """What one step added to one choice of a request."""

    request_id: str
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]
    finish_reason: str | None  # "stop", "length", "abort", "error" or None while running
    prompt_tokens: int
    completion_tokens: int  # so far
    # the prompt's tokens scored (SamplingParams.prompt_logprobs; the first is None), on the first
    # delta of the choice only
    prompt_logprobs: list[TokenLogprob | None] | None = None
    error: str | None = None  # why the choice failed (finish_reason "error"); its request fails


def check_request(prompt_ids: list[int], params: SamplingParams, *, vocab: int, context: int, capacity: int) -> None:
    """Raise InvalidRequest unless the request could run alone on an idle engine."""
    n = len(prompt_ids)
    if n == 0:
        raise InvalidRequest("prompt", "the prompt is empty")
    if min(prompt_ids) < 0 or max(prompt_ids) >= vocab:
        raise InvalidRequest("prompt", f"token ids must be in [0, {vocab})")
    for name, ids in (("logit_bias", params.logit_bias), ("stop_token_ids", params.stop_token_ids)):
        outside = [t for t in ids if not 0 <= t < vocab]
        if outside:
            raise InvalidRequest(name, f"{name} names token id {outside[0]}; token ids must be in [0, {vocab})")
    if n + params.max_tokens > context:
        raise InvalidRequest("max_tokens", f"prompt ({n} tokens) + max_tokens ({params.max_tokens}) "
                             f"exceeds the model's context length of {context} tokens")
    if n + params.max_tokens > capacity:
        raise InvalidRequest("max_tokens", f"prompt ({n} tokens) + max_tokens ({params.max_tokens}) "
                             f"exceeds the whole KV cache ({capacity} tokens); "
                             "ask for fewer tokens or start the server with a larger cache")


class EngineMetrics(Protocol):
    """What the engine reports as it runs (see ``tenacia.serve.metrics``)."""

    def token(self, ttft: float | None, itl: float | None) -> None: ...
    def finished(self, reason: str, prompt_tokens: int, completion_tokens: int, latency: float) -> None: ...
    def step(self, prefill: bool, seconds: float) -> None: ...
    def queue(self, running: int, waiting: int, cache_usage: float) -> None: ...
    def prefix_cache(self, query_tokens: int, hit_tokens: int) -> None: ...  # totals since start


@dataclass(slots=True)
class _Text:
    state: TextState
    pending: list[int] = field(default_factory=list)  # tokens since the last delta
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_sent: bool = False  # the prompt's logprobs went out with a delta


def pack(model: Llama | DeepSeekV3, backend: TorchBackend) -> PackedLlama | PackedDeepSeek:
    """The serving layout of ``model``'s family."""
    return PackedDeepSeek(model, backend) if model.cfg.is_moe else PackedLlama(model, backend)


class LLMEngine:
    def __init__(self, model: Llama | DeepSeekV3, tokenizer: Tokenizer, *, eos_ids: set[int], cfg: EngineConfig,
                 device: torch.device, metrics: EngineMetrics | None = None):
        """``model`` (a ``Llama`` or a ``DeepSeekV3``) is repacked for serving (``pack``); the engine
        keeps no reference to it, so its caller may drop it and free the training layout's memory."""
        mc = model.cfg
        self.model_cfg, self.tokenizer, self.cfg, self.device = mc, tokenizer, cfg, device
        self.eos_ids = frozenset(eos_ids)
        self.max_context = mc.max_seq_len
        dtype = next(model.parameters()).dtype
        # the backend, chosen once here: the model's every operation runs in it
        spec = CacheSpec.of(mc)  # what a token keeps in the cache, from the model's config
        if device.type == "cpu" and dtype == torch.float32:
            self.backend: TorchBackend = cpu_backend(kernels=cfg.decode_kernels, products=cfg.products,
                                                     n_heads=mc.n_heads, spec=spec)
        else:
            self.backend = TorchBackend()
        self.cache = PagedKVCache(n_layers=mc.n_layers, spec=spec, num_blocks=cfg.num_blocks,
                                  block_size=cfg.block_size, dtype=dtype, device=device,
                                  prefix_caching=cfg.prefix_caching)
        self.attention = PagedAttention(self.cache, self.backend)
        self.scheduler = Scheduler(self.cache.allocator, max_num_seqs=cfg.max_num_seqs,
                                   max_batched_tokens=cfg.max_batched_tokens,
                                   prefill_while_decoding=cfg.prefill_while_decoding)
        self.grammars = Grammars(tokenizer, mc.vocab_size, self.eos_ids)
        self.runner = ModelRunner(pack(model, self.backend), self.attention, device, self.grammars)
        self.detokenizer = Detokenizer(tokenizer)
        self.metrics = metrics
        self._texts: dict[int, _Text] = {}
        self._ids = itertools.count()

    @property
    def capacity_tokens(self) -> int:
        return self.cache.capacity_tokens

    @property
    def kv_bytes_per_token(self) -> int:
        """Cache bytes one token takes, all layers together."""
        return self.cache.bytes_per_token

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        check_request(prompt_ids, params, vocab=self.model_cfg.vocab_size, context=self.max_context,
                      capacity=self.capacity_tokens)

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> list[Sequence]:
        """Queue ``params.n`` sequences for ``prompt_ids``; they start at a later ``step()``."""
        self.check(prompt_ids, params)
        seqs = []
        for index in range(params.n):
            seq = Sequence(next(self._ids), request_id, index, list(prompt_ids), params,
                           make_generator(params.seed, index, self.device), self.eos_ids)
            if params.grammar is not None:
                seq.matcher = self.grammars.matcher(params.grammar)
            self._texts[seq.seq_id] = _Text(TextState(stops=list(params.stop)))
            self.scheduler.add(seq)
            seqs.append(seq)
        self._report_queue()
        return seqs

    def abort(self, request_id: str) -> list[ChoiceDelta]:
        """Stop every sequence of ``request_id`` now and free its blocks."""
        deltas = [self._finish(seq, "abort") for seq in self.scheduler.abort(request_id)]
        self._report_queue()
        return deltas

    def warm_up(self) -> float:
        """Run one full-size prefill and a few decode steps on dummy prompts before serving, as
        vLLM's profile run does: the first real burst then finds its activation memory allocated
        and faulted in (a fresh process's first large prefill was much slower than the later ones:
        docs/serving.md, "Speed", the table of changes). Leaves no trace: no metrics, no cached
        prefixes. Returns the seconds it took."""
        if self.has_work():
            raise RuntimeError("warm_up() must run before any request")
        t0, metrics, self.metrics = time.perf_counter(), self.metrics, None
        try:
            per_seq = max(1, min(self.cfg.max_batched_tokens, self.max_context - 4, self.capacity_tokens // 2) // 4)
            count = max(1, min(self.cfg.max_num_seqs, self.cfg.max_batched_tokens // per_seq,
                               self.capacity_tokens // (per_seq + 4)))
            params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
            for i in range(count):
                self.add_request(f"__warm_up_{i}", [i % self.model_cfg.vocab_size] * per_seq, params)
            while self.has_work():
                self.step()
        finally:
            self.metrics = metrics
            self.cache.allocator.reset()
        return time.perf_counter() - t0

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[ChoiceDelta]:
        t0 = time.perf_counter()
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        sampled, failed = self.runner.run(batch)
        self._register_blocks(batch)
        deltas = self._postprocess(sampled)
        for seq, why in failed:
            delta = self._finish(seq, "error")
            delta.error = why
            deltas.append(delta)
        if self.metrics is not None:
            self.metrics.step(batch.prefill, time.perf_counter() - t0)
        self._report_queue()
        return deltas

    def _register_blocks(self, batch: Batch) -> None:
        """Offer the blocks this step filled to the prefix cache."""
        pool, bs = self.cache.allocator, self.cache.block_size
        for seq in batch.seqs:
            if seq.num_cached // bs > seq.registered:
                seq.registered = pool.register(seq.block_table, seq.tokens, seq.num_cached, seq.registered)

    def _report_queue(self) -> None:
        if self.metrics is not None:
            pool = self.cache.allocator
            self.metrics.queue(len(self.scheduler.running), len(self.scheduler.waiting), pool.usage)
            self.metrics.prefix_cache(pool.query_tokens, pool.hit_tokens)

    def _postprocess(self, sampled: list[tuple[Sequence, int, TokenLogprob | None]]) -> list[ChoiceDelta]:
        now = time.perf_counter()
        deltas = []
        for seq, token, logprob in sampled:
            if seq.params.max_tokens == 0:  # the prompt only was wanted (scored): nothing to generate
                deltas.append(self._finish(seq, "length"))
                continue
            seq.output_ids.append(token)
            if self.metrics is not None:
                self.metrics.token(None if seq.first_token_at else now - seq.arrival,
                                   now - seq.last_token_at if seq.last_token_at else None)
            seq.first_token_at = seq.first_token_at or now
            seq.last_token_at = now
            text = self._texts[seq.seq_id]
            text.pending.append(token)
            if logprob is not None:
                text.pending_logprobs.append(logprob)
            try:
                reason = self._stop_reason(seq, token, text.state)
            except ValueError as e:  # the token broke the sequence's grammar
                delta = self._finish(seq, "error")
                delta.error = str(e)
                deltas.append(delta)
                continue
            if reason is not None:
                deltas.append(self._finish(seq, reason))
            else:
                deltas.append(self._delta(seq, text, final=False))
        return deltas

    def _stop_reason(self, seq: Sequence, token: int, state: TextState) -> str | None:
        p = seq.params
        constrained = seq.matcher is not None  # its grammar allows EOS only once complete: EOS ends it
        if (token in seq.eos_ids and (constrained or not p.ignore_eos)) or token in p.stop_token_ids:
            return "stop"  # the stop token's text is not part of the answer
        complete = constrained and advance(seq.matcher, token)
        if self.detokenizer.append(state, seq.output_ids, scan=len(seq.output_ids) >= p.min_tokens) or complete:
            return "stop"
        if len(seq.output_ids) >= p.max_tokens or seq.num_tokens >= self.max_context:
            return "length"
        return None

    def _delta(self, seq: Sequence, text: _Text, final: bool) -> ChoiceDelta:
        delta = ChoiceDelta(seq.request_id, seq.index, self.detokenizer.take(text.state, final),
                            text.pending, text.pending_logprobs, seq.finish_reason,
                            len(seq.prompt_ids), len(seq.output_ids))
        text.pending, text.pending_logprobs = [], []
        if seq.params.prompt_logprobs is not None and not text.prompt_sent and not seq.scores_prompt:
            delta.prompt_logprobs, text.prompt_sent = seq.prompt_logprobs, True
        return delta

    def _finish(self, seq: Sequence, reason: str) -> ChoiceDelta:
        if not seq.finished:
            self.scheduler.finish(seq, reason)
        text = self._texts.pop(seq.seq_id)
        if self.metrics is not None:
            self.metrics.finished(reason, len(seq.prompt_ids), len(seq.output_ids),
                                  time.perf_counter() - seq.arrival)
        return self._delta(seq, text, final=True)
