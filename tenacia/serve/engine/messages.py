"""What the server process and its engine process say to each other, one dataclass a message.

They travel through a ``multiprocessing`` pipe (pickled); nothing else crosses it. Server ->
engine: ``Add``, ``Abort``, ``Stop``. Engine -> server: first ``Ready`` or ``Failed``, then any
number of ``Deltas`` and ``StepFailed``, and ``Stopped`` last. Requests are named by their
engine-side ids, ``<request id>-<prompt index>`` (one per prompt of an API request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .llm_engine import ChoiceDelta
from .sequence import SamplingParams


@dataclass(frozen=True, slots=True)
class Add:
    """Queue one API request: prompt ``i`` of ``prompts`` under the id ``parts[i]``."""

    parts: list[str]
    prompts: list[list[int]]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class Abort:
    """Stop generating for these ids (a client that left, a cancelled request)."""

    parts: list[str]


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish: the engine process answers ``Stopped`` and exits."""


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What the server needs to know of the loaded engine, and its start-up line says."""

    max_context: int
    vocab_size: int
    capacity_tokens: int
    kv_bytes_per_token: int  # cache bytes a token takes, all layers together
    device: str
    dtype: str
    huge_page_bytes: int
    decode_kernels: str  # "on (avx2)", "off (why)", or "" where not applicable
    products: str  # which implementation each product runs ("" untimed)
    pid: int  # the engine process


@dataclass(frozen=True, slots=True)
class Ready:
    info: EngineInfo


@dataclass(frozen=True, slots=True)
class Failed:
    """The engine process could not load the model; it exits."""

    reason: str


@dataclass(frozen=True, slots=True)
class Deltas:
    """One step's new tokens and text, and the engine metrics recorded since the last message
    (method name and arguments of ``EngineMetrics``, replayed into the server's metrics)."""

    deltas: list[ChoiceDelta]
    metrics: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StepFailed:
    """These requests failed (a request the engine refused, or a step that raised); the engine
    has dropped them and serves on."""

    parts: list[str]
    reason: str


@dataclass(frozen=True, slots=True)
class Stopped:
    pass


ToEngine = Add | Abort | Stop
FromEngine = Ready | Failed | Deltas | StepFailed | Stopped
