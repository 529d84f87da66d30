"""The streaming client of bench/serve.py, in the way of `vllm bench serve`'s: each request a
streamed chat completion, greedy, EOS ignored, timed from send to first content and to the end;
``concurrency`` workers drain the prompts. ``response_format``: every request asks for it (the
structured-output arm); its tokens count the same (a JSON delta is content).

Two clients speak the same requests and keep the same times (``CLIENTS``):
- ``lean`` (the default): aiohttp, the server-sent events read line by line and each ``data:``
  line parsed with ``json.loads``, as `vllm bench serve` does; a chunk's arrival is the moment
  its line is read;
- ``openai``: the `openai` SDK's streaming client (httpx, its event decoder and pydantic models
  per chunk), as every run before the lean client used; a chunk's arrival is the moment the SDK
  hands it over.

Per request: TTFT = first chunk with content - send; TPOT = (end of stream - first content) /
(completion tokens - 1), the tokens from the stream's usage chunk; ITL = the gaps between
consecutive content chunks (one a decode step for this server), pooled over the requests of a
sweep for its p50 and p99, as `vllm bench serve` reports them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator

CLIENTS = ("lean", "openai")


def _body(model: str, messages: list[dict], max_tokens: int, response_format: dict | None) -> dict:
    extra = {"response_format": response_format} if response_format else {}
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True, **extra}


class LeanClient:
    """Streamed chat completions over one aiohttp session; the events parsed by hand."""

    def __init__(self, session, base_url: str, api_key: str):
        self.session, self.url = session, base_url + "/v1/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def chunks(self, model: str, messages: list[dict], max_tokens: int,
                     response_format: dict | None) -> AsyncIterator[tuple[float, str | None, int | None]]:
        """(arrival, content or None, completion tokens or None) for every event before
        ``[DONE]``; raises RuntimeError on an HTTP error or an ``error`` event."""
        async with self.session.post(self.url, json=_body(model, messages, max_tokens, response_format),
                                     headers=self.headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:500]}")
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue  # the blank line between events
                arrival, data = time.perf_counter(), line[5:].strip()
                if data == b"[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise RuntimeError(f"error event: {event['error']}")
                choices, usage = event.get("choices"), event.get("usage")
                yield (arrival, choices[0].get("delta", {}).get("content") if choices else None,
                       usage["completion_tokens"] if usage else None)


class OpenAIClient:
    """Streamed chat completions through the `openai` SDK's AsyncOpenAI."""

    def __init__(self, client):
        self.client = client

    async def chunks(self, model: str, messages: list[dict], max_tokens: int,
                     response_format: dict | None) -> AsyncIterator[tuple[float, str | None, int | None]]:
        """As ``LeanClient.chunks``."""
        body = _body(model, messages, max_tokens, response_format)
        extra_body = {"ignore_eos": body.pop("ignore_eos")}  # not a field of the SDK's
        stream = await self.client.chat.completions.create(**body, extra_body=extra_body)
        async for chunk in stream:
            yield (time.perf_counter(), chunk.choices[0].delta.content if chunk.choices else None,
                   chunk.usage.completion_tokens if chunk.usage is not None else None)


@contextlib.asynccontextmanager
async def open_client(kind: str, base_url: str, api_key: str = "none"):
    """A ``LeanClient`` or ``OpenAIClient`` (``kind`` in CLIENTS) for the server at ``base_url``,
    its connections closed on exit."""
    if kind == "lean":
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            yield LeanClient(session, base_url, api_key)
    elif kind == "openai":
        from openai import AsyncOpenAI

        async with AsyncOpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=600) as client:
            yield OpenAIClient(client)
    else:
        raise ValueError(f"client {kind!r} is not one of {', '.join(CLIENTS)}")


async def content_times(client, model: str, messages: list[dict], max_tokens: int,
                        response_format: dict | None = None) -> dict:
    """One request: {"start", "times" (each content chunk's arrival), "end", "tokens" (the usage
    chunk's completion tokens; 0 without one)}, perf_counter seconds."""
    start, times, tokens = time.perf_counter(), [], 0
    async for arrival, content, used in client.chunks(model, messages, max_tokens, response_format):
        if content:
            times.append(arrival)
        if used is not None:
            tokens = used
    return {"start": start, "times": times, "end": time.perf_counter(), "tokens": tokens}


async def one_request(client, model: str, messages: list[dict], max_tokens: int,
                      response_format: dict | None = None) -> dict:
    """One request's ttft, e2e, tpot (seconds), tokens and itl (seconds, one a gap)."""
    r = await content_times(client, model, messages, max_tokens, response_format)
    first = r["times"][0] if r["times"] else r["end"]
    return {"ttft": first - r["start"], "e2e": r["end"] - r["start"], "tokens": r["tokens"],
            "tpot": (r["end"] - first) / max(1, r["tokens"] - 1),
            "itl": [b - a for a, b in zip(r["times"], r["times"][1:], strict=False)]}


async def pool(base_url: str, items: list, concurrency: int, call, client: str = "lean",
               api_key: str = "none") -> tuple[list, float]:
    """``await call(c, item)`` for every item, ``concurrency`` at a time over one client ``c`` of
    kind ``client``; (the calls' results in completion order, wall seconds)."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    records: list = []
    async with open_client(client, base_url, api_key) as c:
        async def worker() -> None:
            while not queue.empty():
                records.append(await call(c, queue.get_nowait()))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return records, time.perf_counter() - start


async def sweep_once(base_url: str, model: str, prompts: list[list[dict]], concurrency: int, max_tokens: int,
                     response_format: dict | None = None, client: str = "lean") -> dict:
    records, duration = await pool(base_url, prompts, concurrency,
                                   lambda c, p: one_request(c, model, p, max_tokens, response_format), client)
    return summarize(records, duration)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def best(rounds: list[dict]) -> dict:
    """The round with the highest output tokens/s: other processes on this shared machine only
    ever slow a round down, so the fastest round is the closest to the engine's own speed."""
    return max(rounds, key=lambda r: r["output_tok_per_s"])


def summarize(records: list[dict], duration: float) -> dict:
    """A sweep's figures; ITL p50 and p99 over every request's gaps where the records have them."""
    tokens = sum(r["tokens"] for r in records)
    ttft = [r["ttft"] * 1000 for r in records]
    tpot = [r["tpot"] * 1000 for r in records]
    out = {"requests": len(records), "duration_s": round(duration, 3), "output_tokens": tokens,
           "request_per_s": round(len(records) / duration, 3), "output_tok_per_s": round(tokens / duration, 2),
           "ttft_p50_ms": round(statistics.median(ttft), 1), "ttft_p99_ms": round(pct(ttft, 99), 1),
           "tpot_p50_ms": round(statistics.median(tpot), 1), "tpot_p99_ms": round(pct(tpot, 99), 1)}
    itl = [g * 1000 for r in records for g in r.get("itl", [])]
    if itl:
        out.update(itl_p50_ms=round(statistics.median(itl), 1), itl_p99_ms=round(pct(itl, 99), 1))
    return out


def sweep(base_url: str, model: str, prompts, c: int, max_tokens: int, response_format: dict | None = None,
          client: str = "lean") -> dict:
    """One sweep; every request must have generated ``max_tokens`` tokens (like for like)."""
    result = asyncio.run(sweep_once(base_url, model, prompts, c, max_tokens, response_format, client))
    if result["output_tokens"] != len(prompts) * max_tokens:
        raise RuntimeError(f"concurrency {c}: expected {len(prompts) * max_tokens} tokens, got {result}")
    return result
