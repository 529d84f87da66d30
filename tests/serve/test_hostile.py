"""One request never hurts another: what a hostile client sent to ``tenacia serve`` (issue 16,
item 7), each case while an innocent stream runs, which must end with ``[DONE]``; and a sequence
whose sampling fails, in the engine and in the process engine, failing its own request alone."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest
import torch

from tenacia.serve.config import EngineConfig
from tenacia.serve.engine.llm_engine import ChoiceDelta, LLMEngine
from tenacia.serve.engine.messages import Abort
from tenacia.serve.engine.process_engine import EngineError, ProcessEngine, RequestHandle
from tenacia.serve.engine.sequence import SamplingParams

from .conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = [{"role": "user", "content": "hi"}]
# (body fields, the status the request must get): sampling values whose arithmetic overflowed
# float32 into NaN probabilities and ended every request in the engine
SAMPLING = [
    ({"temperature": 1e-50}, 400), ({"temperature": 5e-324}, 400), ({"top_p": 1e-50}, 200),
    ({"top_p": 5e-324}, 200), ({"repetition_penalty": 1e-50}, 400), ({"repetition_penalty": 5e-324}, 400),
    ({"top_k": 10**20}, 400), ({"seed": 10**30}, 400), ({"min_p": 1e-50}, 200),
]
DEEP = b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
HUGE_INT = b'{"messages": [{"role": "user", "content": "hi"}], "seed": ' + b"9" * 5000 + b"}"
NOT_NUMBERS = [b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
               b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}']


def innocent_stream(url: str):
    """Start a long greedy stream; returns (first line, a function that reads the rest)."""
    http = httpx.Client(base_url=url, headers=AUTH, timeout=60)
    body = {"model": "tiny", "prompt": "def innocent(", "max_tokens": 400, "stream": True, "temperature": 0.0,
            "ignore_eos": True}
    cm = http.stream("POST", "/v1/completions", json=body)
    stream = cm.__enter__()
    lines = stream.iter_lines()
    first = next(lines)

    def rest() -> list[str]:
        try:
            return [line for line in lines if line]
        finally:
            cm.__exit__(None, None, None)
            http.close()

    return first, rest


def test_hostile_requests_get_4xx_and_the_innocent_stream_finishes(tiny_server):
    first, rest = innocent_stream(tiny_server.url)
    assert first.startswith("data: {")
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=60) as http:
        for fields, status in SAMPLING:
            for stream in (False, True):
                body = {"model": "tiny", "messages": CHAT, "max_tokens": 8, "stream": stream, **fields}
                r = http.post("/v1/chat/completions", json=body)
                assert r.status_code == status, (fields, r.text)
                if status == 400:
                    assert r.json()["error"]["param"] == next(iter(fields)), r.text
                elif stream:
                    assert r.text.rstrip().endswith("data: [DONE]"), (fields, r.text[-300:])
        json_headers = {"Content-Type": "application/json"}
        for raw in (DEEP, HUGE_INT, *NOT_NUMBERS):
            r = http.post("/v1/chat/completions", content=raw, headers=json_headers)
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", (raw[:60], r.text)
        plain = http.post("/v1/chat/completions", content=json.dumps({"messages": CHAT}),
                          headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and "application/json" in plain.json()["error"]["message"]
        form = http.post("/v1/completions", data={"prompt": "x"})
        assert form.status_code == 415
    tail = rest()
    assert tail[-1] == "data: [DONE]", tail[-3:]
    assert not any('"error"' in line for line in tail)


def test_openapi_describes_every_post_body(tiny_server):
    spec = httpx.get(tiny_server.url + "/openapi.json").json()
    for path, schema in [("/v1/chat/completions", "ChatRequest"), ("/v1/completions", "CompletionRequest"),
                         ("/tokenize", "TokenizeRequest"), ("/detokenize", "DetokenizeRequest")]:
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{schema}"
        assert "properties" in spec["components"]["schemas"][schema]
    assert "ChatMessage" in spec["components"]["schemas"]


def test_a_client_gone_mid_upload_is_no_traceback(tiny_server):
    url = urlparse(tiny_server.url)
    before = len(tiny_server.lines)
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n" + b'{"prompt": "')
        time.sleep(0.3)
    time.sleep(0.5)
    assert httpx.get(tiny_server.url + "/health").status_code == 200
    assert "Traceback" not in "".join(tiny_server.lines[before:])


def test_a_sequence_whose_sampling_fails_fails_alone_in_the_engine(model, tokenizer):
    """A row that yields NaN probabilities (a value validation would refuse, set behind its back)
    finishes with "error"; the others get exactly the tokens they get alone."""
    def engine() -> LLMEngine:
        return LLMEngine(model, tokenizer, eos_ids={2}, cfg=EngineConfig(decode_kernels=False),
                         device=torch.device("cpu"))

    sampled = SamplingParams(max_tokens=6, temperature=1.0, seed=5, ignore_eos=True)
    alone = _run(engine(), {"good": sampled})
    bad = SamplingParams(max_tokens=6, temperature=1.0, ignore_eos=True)
    bad.temperature = 1e-50  # past validation
    got = _run(engine(), {"good": sampled, "bad": bad, "greedy": SamplingParams(max_tokens=6, temperature=0.0)})
    assert got["good"] == alone["good"]
    assert got["bad"][1] == "error" and "sampling failed" in got["bad"][2]
    assert got["greedy"][1] in ("length", "stop")


def _run(engine: LLMEngine, requests: dict[str, SamplingParams]) -> dict[str, tuple[list[int], str, str | None]]:
    for rid, params in requests.items():
        engine.add_request(rid, tokenizer_free_prompt(rid), params)
    out: dict[str, tuple[list[int], str, str | None]] = {}
    while engine.has_work():
        for d in engine.step():
            tokens, _, _ = out.get(d.request_id, ([], None, None))
            out[d.request_id] = (tokens + d.token_ids, d.finish_reason, d.error)
    return out


def tokenizer_free_prompt(rid: str) -> list[int]:
    return [11, 42, 99] if rid == "good" else [17, 18, 19, 20]


def test_a_failed_choice_fails_its_request_only_in_the_process_engine():
    async def main() -> None:
        engine = ProcessEngine("unused", EngineConfig())
        engine._conn, worker_end = mp.Pipe()
        hurt, fine = RequestHandle(engine, "req0", 1, 2), RequestHandle(engine, "req1", 1, 1)
        engine._parts = {"req0-0": [hurt, 0, 2], "req1-0": [fine, 0, 1]}

        def delta(rid: str, index: int, reason: str | None = None, error: str | None = None) -> ChoiceDelta:
            return ChoiceDelta(rid, index, "x", [5], [], reason, 3, 1, error=error)

        engine._dispatch([delta("req0-0", 0, "error", "sampling failed: boom"), delta("req0-0", 1), delta("req1-0", 0)])
        with pytest.raises(EngineError, match="boom"):
            async for _ in hurt.deltas():
                pass
        assert worker_end.poll(1) and worker_end.recv() == Abort(["req0-0"])  # its other choice stops
        got = await asyncio.wait_for(fine.queue.get(), 1)
        assert [d.text for d in got] == ["x"] and "req1-0" in engine._parts

    asyncio.run(main())
