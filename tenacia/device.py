"""The only place in tenacia that knows hardware vendors.

Everything else asks this module for a ``Device``: the torch device to compute on, the
torch.distributed backend for collectives, and the dtype to compute in. Detection goes through
``torch.accelerator`` (PyTorch >= 2.6), after importing ``torch_npu`` when it is installed so that
Ascend NPUs register themselves as the accelerator.

| accelerator | backend | compute dtype              |
|-------------|---------|----------------------------|
| cuda        | nccl    | bfloat16 autocast          |
| npu         | hccl    | bfloat16 autocast          |
| xpu         | xccl    | bfloat16 autocast          |
| none (cpu)  | gloo    | float32 (no fast bf16 here)|

CUDA, NPU and XPU paths are written for, not tested on: CI and development run on CPU.

``DeviceConfig`` (``device_config.py``, torch-free) is the one ``[device]`` section that training
runs and the server share.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass

import torch

from .config import check_choice
from .device_config import DEVICE_CHOICES, DeviceConfig  # noqa: F401  (re-exported)

BACKENDS = {"cuda": "nccl", "npu": "hccl", "xpu": "xccl", "mps": "gloo", "cpu": "gloo"}


@dataclass(frozen=True, slots=True)
class Device:
    """Where a process computes and how it talks to its peers."""

    type: str  # 'cpu' | 'cuda' | 'npu' | 'xpu' | 'mps'
    index: int | None
    backend: str  # torch.distributed backend
    autocast_dtype: torch.dtype | None  # None: compute in the parameters' dtype (float32)
    name: str

    @property
    def torch(self) -> torch.device:
        return torch.device(self.type if self.index is None else f"{self.type}:{self.index}")

    @property
    def is_accelerator(self) -> bool:
        return self.type != "cpu"

    @property
    def serve_dtype(self) -> torch.dtype:
        """Weights dtype for inference: bf16 on accelerators, float32 on CPU."""
        return self.autocast_dtype or torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (a no-op on CPU)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        if self.is_accelerator and hasattr(torch, "accelerator"):
            torch.accelerator.synchronize()

    def describe(self) -> dict[str, str]:
        return {
            "device": str(self.torch),
            "name": self.name,
            "backend": self.backend,
            "compute dtype": str(self.autocast_dtype or torch.float32).removeprefix("torch."),
            "torch": torch.__version__,
            "cpu threads": str(torch.get_num_threads()),
            "cpu instruction sets": " ".join(i for i in NOTABLE_ISAS if i in cpu_features()) or "none notable",
        }


CPU_MASK_ENV = "TENACIA_CPU_MASK"


def _cpuinfo() -> str:
    """``/proc/cpuinfo``'s text, empty where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_features(cpuinfo: str | None = None, mask: str | None = None) -> frozenset[str]:
    """The instruction sets this CPU and kernel offer, as Linux names them in ``/proc/cpuinfo``
    (x86: ``avx512f``, ``avx2``, ``fma``, ...; ARM: ``asimd`` is reported as ``neon`` too), less
    those named in ``$TENACIA_CPU_MASK`` (comma-separated: ``avx512f`` runs tenacia and its tests
    as on a CPU without AVX-512). Kernels and the tests of kernels choose by this, never by the
    vendor or model name."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    mask = os.environ.get(CPU_MASK_ENV, "") if mask is None else mask
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found = set(value.split())
            if "asimd" in found:
                found.add("neon")
            break
    return frozenset(found - {m.strip() for m in mask.split(",")})


# the instruction sets that choose a kernel or a torch path, in the order ``tenacia info`` names them
NOTABLE_ISAS = ("amx_tile", "avx512f", "avx512_bf16", "avx512_vnni", "avx2", "fma", "neon", "sve", "sve2")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model as ``/proc/cpuinfo`` names it (x86 ``model name``; ARM ``Model name`` or the
    implementer and part numbers), else ``platform``'s guess. For the record of a result only:
    nothing chooses by it (``cpu_features`` does)."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() not in fields:
            fields[key.strip().lower()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    if "cpu implementer" in fields:
        return f"ARM implementer {fields['cpu implementer']} part {fields.get('cpu part', '?')}"
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def _load_vendor_plugins() -> None:
    """Ascend registers its device type only once torch_npu is imported."""
    if importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401


def _accelerator_type() -> str | None:
    _load_vendor_plugins()
    acc = getattr(torch, "accelerator", None)
    if acc is not None and acc.is_available():
        dev = acc.current_accelerator()
        return dev.type if dev is not None else None
    if torch.cuda.is_available():
        return "cuda"
    return None


def _device_name(kind: str) -> str:
    if kind == "cpu":
        return cpu_model()
    module = getattr(torch, kind, None)
    get_name = getattr(module, "get_device_name", None)
    try:
        return get_name() if get_name else kind
    except Exception:  # a vendor plugin that cannot name its device is not fatal
        return kind


def detect(prefer: str = "auto", local_index: int | None = None) -> Device:
    """Pick the device. ``prefer='auto'`` takes the accelerator if one is present, else the CPU.

    ``local_index`` selects the accelerator for one process of several on a host (its local rank);
    it is ignored on CPU.
    """
    check_choice("device", prefer, DEVICE_CHOICES)
    kind = _accelerator_type() if prefer == "auto" else prefer
    kind = kind or "cpu"
    if kind != "cpu" and prefer != "auto" and _accelerator_type() != kind:
        raise RuntimeError(f"device '{kind}' was asked for but torch finds no such accelerator")
    if kind == "cpu":
        return Device("cpu", None, "gloo", None, _device_name("cpu"))
    index = local_index if local_index is not None else int(os.environ.get("LOCAL_RANK", 0))
    index = index % max(1, torch.accelerator.device_count())
    torch.accelerator.set_device_index(index)
    autocast = torch.bfloat16 if kind in ("cuda", "npu", "xpu") else None
    return Device(kind, index, BACKENDS.get(kind, "gloo"), autocast, _device_name(kind))
