"""The config tree of a server: ``ServeConfig`` and the sections serving owns.

``tenacia serve`` loads it like every tree (``-c file.toml``, ``-o a.b=value``); its short
flags (``--port``, ``--kv-cache-tokens`` ...) are aliases of these fields (``serve/cli.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import check, check_choice
from ..device_config import DeviceConfig

LOG_LEVELS = ("debug", "info", "warning", "error")
REASONING_MODES = ("auto", "think", "none")  # serve/reasoning.py
TOOL_PARSERS = ("auto", "hermes", "llama3_json", "mistral", "pythonic")  # serve/tools/


@dataclass(kw_only=True, slots=True)
class EngineConfig:
    """How much the engine keeps in memory and how much it runs in one step."""

    kv_cache_tokens: int = 16384  # tokens of keys/values the paged cache holds, all sequences together
    block_size: int = 16  # tokens per cache block; a sequence holds ceil(len / block_size) blocks
    max_num_seqs: int = 32  # sequences decoded together in one step
    max_batched_tokens: int = 2048  # prompt tokens prefilled in one step (longer prompts are chunked)
    # while sequences decode, a prefill step takes at most this many prompt tokens and a decode
    # step follows it: a stream waits at most one such prefill for its next token (scheduler.py)
    prefill_while_decoding: int = 512
    prefix_caching: bool = True  # share the cache blocks of prompts' common prefixes (block_pool.py)
    decode_kernels: bool = True  # CPU: hand-written decode kernels, a 2nd copy of the weights (engine/cpu/kernels.py)
    huge_pages: bool = True  # the engine process's large buffers on transparent huge pages (engine/cpu/host.py)
    # CPU: "timed" times each product's implementations (MKL packed, plain, kernel) at start and
    # keeps the fastest (engine/cpu/products.py); "default" takes the kernel for a decode and
    # MKL's packed GEMM for a prefill untimed, for runs that must be reproduced exactly
    products: str = "timed"
    # one full-size prefill and a few decode steps before serving (LLMEngine.warm_up): the first
    # burst then finds its memory allocated and faulted in; false starts serving sooner (tests)
    warm_up: bool = True

    def __post_init__(self) -> None:
        check(self.block_size > 0, "block_size", self.block_size, "a positive integer")
        check(self.kv_cache_tokens >= self.block_size, "kv_cache_tokens", self.kv_cache_tokens,
              f"at least one block (block_size={self.block_size})")
        check(self.max_num_seqs > 0, "max_num_seqs", self.max_num_seqs, "a positive integer")
        check(self.max_batched_tokens > 0, "max_batched_tokens", self.max_batched_tokens,
              "a positive integer")
        check(self.prefill_while_decoding > 0, "prefill_while_decoding", self.prefill_while_decoding,
              "a positive integer")
        check_choice("products", self.products, ("timed", "default"))

    @property
    def num_blocks(self) -> int:
        return self.kv_cache_tokens // self.block_size


@dataclass(kw_only=True, slots=True)
class ServerConfig:
    """The HTTP front: where it listens, who may call it and how much one call may ask for."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port (printed at start)
    api_keys: list[str] = field(default_factory=list)  # empty: no key needed
    model_name: str = ""  # the id /v1/models reports; "" derives it from the model
    max_body_bytes: int = 1 << 20  # a larger request body gets 413
    max_prompt_tokens: int = 0  # 0: the model's context length
    max_tokens_limit: int = 4096  # the largest max_tokens a request may ask for
    max_concurrent_requests: int = 64  # requests in flight; one more gets 429
    drain_timeout_s: float = 30.0  # on shutdown, how long in-flight requests may take to finish
    log_level: str = "warning"  # the server's log: debug, info, warning or error
    # chat answers of a model that thinks in <think>...</think>: its reasoning apart from its
    # content ("auto": when the chat template writes </think>; "think": always; "none": never)
    reasoning: str = "auto"
    # the format of the model's tool calls, read and forced: "hermes" (<tool_call> blocks),
    # "llama3_json" ({"name", "parameters"}), "mistral" ([TOOL_CALLS][...] or [TOOL_CALLS]name[ARGS]{...}),
    # "pythonic" ([f(a=1)], read only); "auto": from the chat template's markup (serve/tools/__init__.py)
    tool_parser: str = "auto"

    def __post_init__(self) -> None:
        check(0 <= self.port < 65536, "port", self.port, "0 (pick a free port) or 1..65535")
        check(all(k.strip() for k in self.api_keys), "api_keys", self.api_keys, "non-empty strings")
        check(self.max_body_bytes >= 1024, "max_body_bytes", self.max_body_bytes, "at least 1024")
        check(self.max_prompt_tokens >= 0, "max_prompt_tokens", self.max_prompt_tokens,
              "0 (the model's context length) or a positive integer")
        check(self.max_tokens_limit > 0, "max_tokens_limit", self.max_tokens_limit, "a positive integer")
        check(self.max_concurrent_requests > 0, "max_concurrent_requests", self.max_concurrent_requests,
              "a positive integer")
        check(self.drain_timeout_s >= 0, "drain_timeout_s", self.drain_timeout_s, "a number of seconds >= 0")
        check_choice("log_level", self.log_level, LOG_LEVELS)
        check_choice("reasoning", self.reasoning, REASONING_MODES)
        check_choice("tool_parser", self.tool_parser, TOOL_PARSERS)


@dataclass(kw_only=True, slots=True)
class ServeConfig:
    """The whole config of ``tenacia serve``."""

    # 'smollm2', a tenacia run directory, or a Hugging Face directory (serve/models.py)
    model: str = ""
    server: ServerConfig = field(default_factory=ServerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)

    # old dotted name -> new one (tenacia 0.1.0 before the one [device] section)
    MOVED: ClassVar[dict[str, str]] = {"engine.device": "device.type"}
