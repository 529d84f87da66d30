"""``[device]``: where a process computes and with how many CPU threads.

The one section training runs and the server share. Torch-free, so that the launcher and every
command line read the config tree without importing torch; ``device.py`` turns it into a
``Device``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import check, check_choice

DEVICE_CHOICES = ("auto", "cpu", "cuda", "npu", "xpu", "mps")


@dataclass(kw_only=True, slots=True)
class DeviceConfig:
    """Where a process computes and with how many CPU threads (``[device]``)."""

    type: str = "auto"  # "auto" takes the accelerator if there is one, else the CPU
    # torch intra-op threads; 0 leaves torch's default in one process, and gives each replica
    # process 1 (several replicas share a host's cores). Pin it for bit-identical results.
    threads: int = 0

    def __post_init__(self) -> None:
        check_choice("type", self.type, DEVICE_CHOICES)
        check(self.threads >= 0, "threads", self.threads, "0 (torch's default) or a positive integer")
