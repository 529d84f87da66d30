"""Subcommand ``serve``: the config tree ``ServeConfig``, from ``-c``/``-o`` and its short flags.

Every short flag is an alias of one tree field (``FLAGS``): given, it becomes an override applied
before the ``-o`` ones; not given, the field keeps its value from the TOML file or its default.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import add_config_args

API_KEY_ENV = "TENACIA_API_KEY"
# argparse dest -> tree field
FLAGS = {
    "model": "model", "host": "server.host", "port": "server.port", "name": "server.model_name",
    "device": "device.type", "threads": "device.threads",
    "kv_cache_tokens": "engine.kv_cache_tokens", "block_size": "engine.block_size",
    "prefix_caching": "engine.prefix_caching", "huge_pages": "engine.huge_pages",
    "decode_kernels": "engine.decode_kernels", "max_num_seqs": "engine.max_num_seqs",
    "max_batched_tokens": "engine.max_batched_tokens", "max_prompt_tokens": "server.max_prompt_tokens",
    "prefill_while_decoding": "engine.prefill_while_decoding",
    "max_tokens_limit": "server.max_tokens_limit", "max_body_bytes": "server.max_body_bytes",
    "max_concurrent_requests": "server.max_concurrent_requests", "drain_timeout": "server.drain_timeout_s",
    "log_level": "server.log_level", "reasoning": "server.reasoning",
    "tool_parser": "server.tool_parser",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model: OpenAI-compatible API, chat page, metrics")
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="'smollm2', a tenacia run directory, or a Hugging Face directory of "
                        "model_type llama, mistral or qwen2 (alias of -o model=...)")
    add_config_args(p)
    a = p.add_argument
    a("--host", help="address to listen on (server.host, default 127.0.0.1)")
    a("--port", type=int, help="port; 0 picks a free one and prints it (server.port, default 8000)")
    a("--api-key", action="append", default=[], metavar="KEY",
      help=f"require this key on /v1/ (repeatable; adds to server.api_keys and ${API_KEY_ENV}, comma-separated)")
    a("--name", help="model id reported by /v1/models (server.model_name; default: from MODEL)")
    a("--device", help="auto, cpu, cuda, npu, xpu or mps (device.type)")
    a("--threads", type=int, help="torch CPU threads, 0: torch's default (device.threads)")
    a("--kv-cache-tokens", type=int, help="tokens the KV cache holds in all (engine.kv_cache_tokens)")
    a("--block-size", type=int, help="tokens per KV cache block (engine.block_size)")
    a("--no-prefix-caching", dest="prefix_caching", action="store_const", const=False,
      help="do not share cache blocks between prompts that start alike (engine.prefix_caching=false)")
    a("--no-huge-pages", dest="huge_pages", action="store_const", const=False,
      help="keep the engine's weights and cache off transparent huge pages (engine.huge_pages=false)")
    a("--no-decode-kernels", dest="decode_kernels", action="store_const", const=False,
      help="decode with torch ops and MKL alone: one copy of the weights, not two (engine.decode_kernels=false)")
    a("--max-num-seqs", type=int, help="sequences decoded together (engine.max_num_seqs)")
    a("--max-batched-tokens", type=int, help="prompt tokens prefilled per step (engine.max_batched_tokens)")
    a("--prefill-while-decoding", type=int,
      help="prompt tokens prefilled per step while other sequences decode (engine.prefill_while_decoding)")
    a("--max-prompt-tokens", type=int, help="longest prompt, 0: the model's context (server.max_prompt_tokens)")
    a("--max-tokens-limit", type=int, help="largest max_tokens a request may ask (server.max_tokens_limit)")
    a("--max-body-bytes", type=int, help="largest request body (server.max_body_bytes)")
    a("--max-concurrent-requests", type=int, help="requests in flight before 429 (server.max_concurrent_requests)")
    a("--drain-timeout", type=float, help="seconds in-flight requests get at shutdown (server.drain_timeout_s)")
    a("--log-level", help="debug, info, warning or error (server.log_level)")
    a("--reasoning", help="auto, think or none: send <think> blocks as reasoning_content (server.reasoning)")
    a("--tool-parser", help="auto, hermes, llama3_json, mistral or pythonic: the model's tool-call format (server.tool_parser)")
    p.set_defaults(handler=cmd_serve)


def serve_config(args: argparse.Namespace):
    """The ``ServeConfig`` the command line describes (module docstring)."""
    from .. import config
    from .config import ServeConfig

    cfg = config.load(ServeConfig, args.config, config.flag_overrides(vars(args), FLAGS) + list(args.override))
    keys = list(args.api_key) + [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    config.check(all(k.strip() for k in keys), "--api-key", keys, "non-empty keys")
    cfg.server.api_keys = [*cfg.server.api_keys, *keys]
    if not cfg.model:
        raise config.ConfigError("model", cfg.model, "a model to serve: MODEL on the command line or "
                                 "model = '...' in the config ('smollm2', a run directory, a Hugging Face directory)")
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    from .models import ModelNotFound
    from .server import EngineStartError, serve

    cfg = serve_config(args)
    try:
        return serve(cfg)
    except (ModelNotFound, EngineStartError, OSError) as e:
        print(f"tenacia: {e}", file=sys.stderr)
        return 2
