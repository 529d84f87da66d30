"""The quorum's process group: a fresh gloo group per quorum, built off the training thread."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from typing import Any

import torch.distributed as dist


class GroupBuilder:
    """Builds the quorum's gloo group in a thread; the training thread keeps polling meanwhile."""

    def __init__(self, store_addr: str, quorum_id: int, rank: int, world: int, host: str):
        self.pg: Any = None
        self.error: str | None = None
        self.done = threading.Event()
        args = (store_addr, quorum_id, rank, world, host)
        threading.Thread(target=self._build, args=args, name=f"pg-{quorum_id}", daemon=True).start()

    def _build(self, store_addr: str, quorum_id: int, rank: int, world: int, host: str) -> None:
        try:
            shost, port = store_addr.rsplit(":", 1)
            store = dist.TCPStore(shost, int(port), is_master=False, timeout=timedelta(seconds=10))
            opts = dist.ProcessGroupGloo._Options()
            opts._timeout = timedelta(seconds=30)
            iface = os.environ.get("GLOO_SOCKET_IFNAME")
            device = (dist.ProcessGroupGloo.create_device(interface=iface) if iface
                      else dist.ProcessGroupGloo.create_device(hostname=host))
            opts._devices = [device]
            self.pg = dist.ProcessGroupGloo(dist.PrefixStore(f"q{quorum_id}", store), rank, world, opts)
        except Exception as e:  # noqa: BLE001 - any failure means: this quorum cannot run
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()
