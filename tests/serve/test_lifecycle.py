"""Concurrency limit, client disconnects and draining shutdown, on a server of their own."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import openai
import pytest

from .tiny import ServerProcess

LONG = {"max_tokens": 3000, "ignore_eos": True}  # seconds of work for the tiny model


@pytest.fixture(scope="module")
def server(tiny_dir):
    with ServerProcess(tiny_dir, "--name", "tiny", "--max-concurrent-requests", "2", "--max-tokens-limit", "4000",
                       "--no-huge-pages", "--no-decode-kernels") as s:
        yield s


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def thp_mode() -> str:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "unavailable"
    return text.split("[")[1].split("]")[0]


def test_engine_buffers_on_huge_pages_unless_told_not_to(server, tiny_server):
    """The engine process puts its weights and KV cache on transparent huge pages (host.py), which
    the start-up line reports from the process's own /proc/self/smaps_rollup."""
    listening = [line for line in tiny_server.lines if "listening on" in line][0]
    mode = thp_mode()
    if mode in ("madvise", "always"):
        assert re.search(r"; [1-9]\d* MiB on huge pages[;)]", listening), listening
    if mode == "madvise":  # "always" puts every large mapping on huge pages, asked or not
        assert not any("on huge pages" in line for line in server.lines), server.lines


def test_start_up_line_says_whether_decode_kernels_run(server, tiny_server):
    from tenacia.device import cpu_features

    from ..conftest import HAS_CC

    listening = [line for line in tiny_server.lines if "listening on" in line][0]
    if HAS_CC:  # the best build this CPU runs (the generic one runs on every CPU)
        best = "avx512" if "avx512f" in cpu_features() else "avx2" if "avx2" in cpu_features() else "generic"
        # the tiny model's decode products all run in the kernels' panels: the way a step runs is
        # timed (engine/cpu/decode_path.py) and named, with each way's medians and the seconds spent
        assert re.search(rf"; decode kernels on \({best}; decode (one call|layer by layer(, prefill products)?) "
                         r"\(ms a step at 1/16 sequences: one call [\d.]+/[\d.]+; layer by layer [\d.]+/[\d.]+"
                         r"(; layer by layer, prefill products [\d.]+/[\d.]+)?; timed in [\d.]+ s: set-up [\d.]+, "
                         r"warm-up [\d.]+, \d+ rounds [\d.]+\); prefill (products as timed|kernel panels|rows shared) "
                         r"\(ms a prefill of 100 tokens: products as timed [\d.]+(; kernel panels [\d.]+)?; rows shared "
                         r"[\d.]+; timed in [\d.]+ s\)\)[;)]",
                         listening), listening
        assert re.search(r"; products decode .+, prefill .+, long prefill \(over 256 rows\) .+ \(timed in [\d.]+ s\)\)",
                         listening), listening
    else:  # and says why not
        assert re.search(r"; decode kernels off \(.+\)[;)]", listening), listening
    assert "; decode kernels off (--no-decode-kernels)" in [ln for ln in server.lines if "listening on" in ln][0]


def test_over_the_limit_is_429_and_disconnects_cancel(server):
    aborted = 'tenacia_sequences_finished_total{finish_reason="abort"}'
    before = metric(server.url, aborted)
    body = {"prompt": "stream me", "stream": True, **LONG}
    with httpx.Client(base_url=server.url, timeout=30) as a, httpx.Client(base_url=server.url, timeout=30) as b:
        with a.stream("POST", "/v1/completions", json=body) as s1, b.stream("POST", "/v1/completions", json=body) as s2:
            lines = [s1.iter_lines(), s2.iter_lines()]  # kept referenced: a closed iterator closes the stream
            assert all(next(it).startswith("data: ") for it in lines)  # both are generating
            with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0) as client:
                with pytest.raises(openai.RateLimitError) as err:
                    client.completions.create(model="tiny", prompt="one too many", max_tokens=2)
            assert err.value.status_code == 429
        # Leaving the blocks closed both connections mid-stream.
    assert wait_for(lambda: metric(server.url, aborted) >= before + 2)
    assert wait_for(lambda: metric(server.url, "tenacia_requests_running") == 0)
    assert metric(server.url, "tenacia_kv_cache_usage_ratio") == 0.0

    # A non-streamed request is cancelled too when its client gives up.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json={"prompt": "slow", **LONG}, timeout=0.5)
    assert wait_for(lambda: metric(server.url, aborted) >= before + 3)
    ok = httpx.post(server.url + "/v1/completions", json={"prompt": "room again", "max_tokens": 2})
    assert ok.status_code == 200


def test_ctrl_c_drains_requests_in_flight(server):
    """SIGINT to the whole process group, as Ctrl-C sends it: the engine process must not die
    with the server's requests still running."""
    body = {"prompt": "finish me", "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": 300, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as stream:
            lines = stream.iter_lines()
            first = next(lines)
            assert first.startswith("data: ")
            os.killpg(server.proc.pid, signal.SIGINT)
            rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    assert '"completion_tokens": 300' in rest[-2]
    assert server.wait(30) == 0
    assert "stopped after a signal" in server.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=2)
