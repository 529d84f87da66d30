"""The streaming client of bench/serve.py, in the way of `vllm bench serve`'s: each request a
streamed chat completion, greedy, EOS ignored, timed from send to first content and to the end;
``concurrency`` workers drain the prompts. ``response_format``: every request asks for it (the
structured-output arm); its tokens count the same (a JSON delta is content)."""

from __future__ import annotations

import asyncio
import statistics
import time


async def one_request(client, model: str, messages: list[dict], max_tokens: int,
                      response_format: dict | None = None) -> dict:
    start = time.perf_counter()
    first = None
    tokens = 0
    extra = {"response_format": response_format} if response_format else {}
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}, **extra)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    first = first or end
    return {"ttft": first - start, "e2e": end - start, "tokens": tokens,
            "tpot": (end - first) / max(1, tokens - 1)}


async def pool(base_url: str, items: list, concurrency: int, call) -> tuple[list, float]:
    """``await call(client, item)`` for every item, ``concurrency`` at a time over one OpenAI client;
    (the calls' results in completion order, wall seconds)."""
    from openai import AsyncOpenAI

    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    records: list = []
    async with AsyncOpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0, timeout=600) as client:
        async def worker() -> None:
            while not queue.empty():
                records.append(await call(client, queue.get_nowait()))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return records, time.perf_counter() - start


async def sweep_once(base_url: str, model: str, prompts: list[list[dict]], concurrency: int, max_tokens: int,
                     response_format: dict | None = None) -> dict:
    records, duration = await pool(base_url, prompts, concurrency,
                                   lambda client, p: one_request(client, model, p, max_tokens, response_format))
    return summarize(records, duration)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def best(rounds: list[dict]) -> dict:
    """The round with the highest output tokens/s: other processes on this shared machine only
    ever slow a round down, so the fastest round is the closest to the engine's own speed."""
    return max(rounds, key=lambda r: r["output_tok_per_s"])


def summarize(records: list[dict], duration: float) -> dict:
    tokens = sum(r["tokens"] for r in records)
    ttft = [r["ttft"] * 1000 for r in records]
    tpot = [r["tpot"] * 1000 for r in records]
    return {"requests": len(records), "duration_s": round(duration, 3), "output_tokens": tokens,
            "request_per_s": round(len(records) / duration, 3), "output_tok_per_s": round(tokens / duration, 2),
            "ttft_p50_ms": round(statistics.median(ttft), 1), "ttft_p99_ms": round(pct(ttft, 99), 1),
            "tpot_p50_ms": round(statistics.median(tpot), 1), "tpot_p99_ms": round(pct(tpot, 99), 1)}


def sweep(base_url: str, model: str, prompts, c: int, max_tokens: int, response_format: dict | None = None) -> dict:
    """One sweep; every request must have generated ``max_tokens`` tokens (like for like)."""
    result = asyncio.run(sweep_once(base_url, model, prompts, c, max_tokens, response_format))
    if result["output_tokens"] != len(prompts) * max_tokens:
        raise RuntimeError(f"concurrency {c}: expected {len(prompts) * max_tokens} tokens, got {result}")
    return result
