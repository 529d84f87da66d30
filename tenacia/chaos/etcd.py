"""A throwaway etcd server for labs, tests and benchmarks (Debian's ``etcd-server``): on free
loopback ports or on an address the caller gives (inside one of the project's network namespaces,
with ``argv_prefix = LinkLab.exec_argv(k, [])``), its data in a directory the caller owns, killed
on exit. Tests that need it skip when the ``etcd`` binary is absent (``.ci/run`` installs it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ETCD = shutil.which("etcd")
MISSING = "etcd is not installed (Debian: apt-get install etcd-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """``with EtcdServer(tmp_path) as etcd: etcd.url`` -> ``etcd://HOST:PORT``. ``argv_prefix`` runs
    it elsewhere (``LinkLab.exec_argv``)."""

    def __init__(self, data: Path, host: str = "127.0.0.1", argv_prefix: list[str] | None = None):
        self.data, self.host = Path(data), host
        self.client_port, self.peer_port = free_port(), free_port()
        self.prefix = argv_prefix or []
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"etcd://{self.host}:{self.client_port}"

    def __enter__(self) -> EtcdServer:
        client = f"http://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
        log = open(self.data.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(
            [*self.prefix, ETCD, "--name", "t", "--data-dir", str(self.data), "--listen-client-urls", client,
             "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"t={peer}", "--log-level", "error"],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.data.with_suffix('.log').read_text()[-2000:]}")
            if self.healthy(client):
                return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("etcd did not become healthy in 30 s")

    def healthy(self, client: str) -> bool:
        """Asked from where etcd runs (its namespace, when ``argv_prefix`` puts it in one)."""
        code = (f"import urllib.request as u; r = u.urlopen('{client}/health', timeout=1).read(); "
                "raise SystemExit(0 if b'true' in r else 1)")
        probe = subprocess.run([*self.prefix, sys.executable, "-c", code], capture_output=True, timeout=10)
        return probe.returncode == 0

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
