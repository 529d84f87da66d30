"""Subcommands `serve` and `export`."""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError

API_KEY_ENV = "TENACIA_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model: OpenAI-compatible API, chat page, metrics")
    p.add_argument("model", metavar="MODEL",
                   help="'smollm2', a tenacia run directory, or a Hugging Face directory of "
                        "model_type llama, mistral or qwen2")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one and prints it")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help=f"require this key on /v1/ (repeatable; also ${API_KEY_ENV}, comma-separated)")
    p.add_argument("--name", default="", help="model id reported by /v1/models (default: from MODEL)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, npu, xpu or mps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--kv-cache-tokens", type=int, default=16384, help="tokens the KV cache holds in all")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV cache block")
    p.add_argument("--no-prefix-caching", action="store_true",
                   help="do not share cache blocks between prompts that start alike")
    p.add_argument("--no-huge-pages", action="store_true",
                   help="keep the engine's weights and cache off transparent huge pages")
    p.add_argument("--no-decode-kernels", action="store_true",
                   help="decode with torch ops and MKL alone (one copy of the weights, not two; CPU with AVX-512 only)")
    p.add_argument("--max-num-seqs", type=int, default=32, help="sequences decoded together")
    p.add_argument("--max-batched-tokens", type=int, default=2048, help="prompt tokens prefilled per step")
    p.add_argument("--max-prompt-tokens", type=int, default=0, help="longest prompt (0: the model's context)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens a request may ask")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body")
    p.add_argument("--max-concurrent-requests", type=int, default=64, help="requests in flight before 429")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds in-flight requests get at shutdown")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("export", help="write a run's model as a Hugging Face directory (vLLM, SGLang, transformers)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a tenacia run directory")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(handler=cmd_export)


def server_config(args: argparse.Namespace):
    from .config import EngineConfig, ServerConfig

    keys = list(args.api_key) + [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    engine = EngineConfig(kv_cache_tokens=args.kv_cache_tokens, block_size=args.block_size,
                          max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_batched_tokens,
                          prefix_caching=not args.no_prefix_caching, huge_pages=not args.no_huge_pages,
                          decode_kernels=not args.no_decode_kernels, device=args.device)
    return ServerConfig(host=args.host, port=args.port, api_keys=keys, model_name=args.name,
                        max_body_bytes=args.max_body_bytes, max_prompt_tokens=args.max_prompt_tokens,
                        max_tokens_limit=args.max_tokens_limit,
                        max_concurrent_requests=args.max_concurrent_requests,
                        drain_timeout_s=args.drain_timeout, engine=engine)


def cmd_serve(args: argparse.Namespace) -> int:
    from .models import ModelNotFound
    from .server import EngineStartError, serve

    cfg = server_config(args)
    if args.threads < 0:
        raise ConfigError("threads", args.threads, "0 (torch default) or a positive integer")
    try:
        return serve(args.model, cfg, threads=args.threads, log_level=args.log_level)
    except (ModelNotFound, EngineStartError, OSError) as e:
        print(f"tenacia: {e}", file=sys.stderr)
        return 2


def cmd_export(args: argparse.Namespace) -> int:
    from ..train.checkpoint import CorruptCheckpoint
    from .export import export_run

    try:
        out = export_run(args.run_dir, args.out)
    except CorruptCheckpoint as e:
        print(f"tenacia: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} to {out}: load it with transformers' AutoModelForCausalLM, "
          f"or serve it with `tenacia serve {out}` or `vllm serve {out}`")
    return 0
