"""bench/serve_client.py: the lean client (aiohttp, the events parsed by hand) and the `openai`
SDK's send the same request and see the same stream: the same body and key, the same content
chunks, the tokens from the usage chunk, the ITL one gap per pair of content chunks. Checked on
a scripted event stream over a real socket, and on a real `tenacia serve`."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from pathlib import Path

import pytest

from .conftest import API_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from serve_client import CLIENTS, content_times, one_request, pool, summarize  # noqa: E402

MESSAGES = [{"role": "user", "content": "Say something."}]


def event(delta: dict | None = None, usage: dict | None = None, reason: str | None = None) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason}],
            "usage": usage}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


# A stream as a chat server sends it: the role first (no content), three tokens, one step that
# holds its bytes back (an empty delta), the finish, the usage, [DONE].
SCRIPT = [event({"role": "assistant", "content": ""}), event({"content": "Hel"}), event({"content": "lo"}),
          event({}), event({"content": " there"}), event({}, reason="length"),
          event(usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}), b"data: [DONE]\n\n"]


async def scripted_server(script: list[bytes], seen: list[dict], status: int = 200):
    """An aiohttp server on a free port that records each request (body, key) and answers with
    ``script``'s events one write at a time; (runner, base url)."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append({"body": await request.json(), "auth": request.headers.get("Authorization")})
        if status != 200:
            return web.json_response({"error": {"message": "no"}}, status=status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in script:
            await resp.write(chunk)
            await asyncio.sleep(0.002)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def run_scripted(kind: str, script: list[bytes], status: int = 200) -> tuple[list[dict], list[dict]]:
    """Two requests through client ``kind`` against a scripted server: (their content_times, what the server saw)."""
    async def main():
        seen: list[dict] = []
        runner, url = await scripted_server(script, seen, status)
        try:
            records, _ = await pool(url, [MESSAGES, MESSAGES], 2,
                                    lambda c, m: content_times(c, "m", m, 7, {"type": "json_object"}), kind, "sk-x")
        finally:
            await runner.cleanup()
        return records, seen

    return asyncio.run(main())


@pytest.mark.parametrize("kind", CLIENTS)
def test_both_clients_send_the_same_request_and_read_the_same_chunks(kind):
    records, seen = run_scripted(kind, SCRIPT)
    assert [s["auth"] for s in seen] == ["Bearer sk-x"] * 2
    for s in seen:
        assert s["body"] == {"model": "m", "messages": MESSAGES, "max_tokens": 7, "temperature": 0.0, "stream": True,
                             "stream_options": {"include_usage": True}, "ignore_eos": True,
                             "response_format": {"type": "json_object"}}
    for r in records:
        assert r["tokens"] == 4
        assert len(r["times"]) == 3  # the content chunks only: not the role, the held-back step or the usage
        assert r["start"] <= r["times"][0] <= r["times"][1] <= r["times"][2] <= r["end"]


def test_lean_client_refuses_an_http_error_and_an_error_event():
    with pytest.raises(RuntimeError, match="HTTP 400"):
        run_scripted("lean", SCRIPT, status=400)
    error = b'data: {"error": {"message": "engine gone", "code": 500}}\n\n'
    with pytest.raises(RuntimeError, match="engine gone"):
        run_scripted("lean", [SCRIPT[0], SCRIPT[1], error])


def test_a_request_s_figures_follow_from_its_chunk_times():
    async def main():
        seen: list[dict] = []
        runner, url = await scripted_server(SCRIPT, seen)
        try:
            return await pool(url, [MESSAGES], 1, lambda c, m: one_request(c, "m", m, 7), "lean", "sk-x")
        finally:
            await runner.cleanup()

    records, duration = asyncio.run(main())
    r = records[0]
    assert r["tokens"] == 4 and len(r["itl"]) == 2
    assert r["tpot"] == pytest.approx((r["e2e"] - r["ttft"]) / 3)
    got = summarize(records, duration)
    assert got["itl_p50_ms"] == pytest.approx(1000 * statistics.median(r["itl"]), abs=0.051)
    assert got["output_tokens"] == 4
    assert "itl_p50_ms" not in summarize([{k: v for k, v in r.items() if k != "itl"}], duration)


@pytest.mark.timeout(180)
def test_both_clients_read_a_real_server_alike(tiny_server):
    """Against `tenacia serve` (greedy, the same prompt): every request's tokens as asked, and the
    same number of content chunks whichever client reads them."""
    def chunks(kind: str) -> list[int]:
        records, _ = asyncio.run(pool(tiny_server.url, [MESSAGES] * 3, 2,
                                      lambda c, m: content_times(c, "tiny", m, 12), kind, API_KEY))
        assert [r["tokens"] for r in records] == [12] * 3
        return [len(r["times"]) for r in records]

    lean, sdk = chunks("lean"), chunks("openai")
    assert lean == sdk and 0 < lean[0] <= 12
