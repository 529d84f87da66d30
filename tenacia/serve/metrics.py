"""Prometheus metrics of one server, in a registry of its own (no process-wide globals, so that
several servers can live in one process, as in tests). Names follow Prometheus conventions:
seconds for durations, ``_total`` for counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
                   2.5, 5.0, 10.0, 30.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """Implements ``EngineMetrics``; written by the engine thread, read by ``/metrics``."""

    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("tenacia_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("tenacia_inter_token_latency_seconds", "Time between two tokens of a sequence",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("tenacia_e2e_request_latency_seconds", "Arrival to last token of a sequence",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.step_time = Histogram("tenacia_step_seconds", "Duration of one engine step", ["kind"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.running = Gauge("tenacia_requests_running", "Sequences holding cache blocks", registry=r)
        self.waiting = Gauge("tenacia_requests_waiting", "Sequences waiting for cache blocks", registry=r)
        self.cache_usage = Gauge("tenacia_kv_cache_usage_ratio", "Share of KV cache blocks in use", registry=r)
        self.prefix_queries = Gauge("tenacia_prefix_cache_queries_tokens",
                                    "Prompt tokens looked up in the prefix cache since start", registry=r)
        self.prefix_hits = Gauge("tenacia_prefix_cache_hits_tokens",
                                 "Prompt tokens found in the prefix cache (not prefilled) since start", registry=r)
        self.prompt_tokens = Counter("tenacia_prompt_tokens", "Prompt tokens of finished sequences", registry=r)
        self.generation_tokens = Counter("tenacia_generation_tokens", "Generated tokens", registry=r)
        self.sequences = Counter("tenacia_sequences_finished", "Finished sequences by finish reason",
                                 ["finish_reason"], registry=r)
        info = Gauge("tenacia_model_info", "The served model", ["model"], registry=r)
        info.labels(model=model_name).set(1)

    def token(self, ttft: float | None, itl: float | None) -> None:
        self.generation_tokens.inc()
        if ttft is not None:
            self.ttft.observe(ttft)
        if itl is not None:
            self.itl.observe(itl)

    def finished(self, reason: str, prompt_tokens: int, completion_tokens: int, latency: float) -> None:
        self.sequences.labels(finish_reason=reason).inc()
        self.prompt_tokens.inc(prompt_tokens)
        self.e2e.observe(latency)

    def step(self, prefill: bool, seconds: float) -> None:
        self.step_time.labels(kind="prefill" if prefill else "decode").observe(seconds)

    def queue(self, running: int, waiting: int, cache_usage: float) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.cache_usage.set(cache_usage)

    def prefix_cache(self, query_tokens: int, hit_tokens: int) -> None:
        self.prefix_queries.set(query_tokens)
        self.prefix_hits.set(hit_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
