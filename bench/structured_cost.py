"""What a response format costs: the engine alone, in-process (no HTTP), SmolLM2-135M-Instruct in
float32, ``--seqs`` streams decoded together, free text against a JSON schema whose output runs
as long as the free text (an array of ``--items`` bounded strings). Both arms generate exactly
``--tokens`` tokens a stream (free text ignores EOS; the schema arm's outputs are cut by length
at the same count, which this measure allows), so tokens/s compare like for like; the grammar's
own time (the mask and the state update) is timed around its two calls.

    .venv/bin/python bench/structured_cost.py [--seqs 16] [--tokens 96] [--rounds 3] [--threads 2]

Prints a table and writes bench/results/structured-cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEMA = {"type": "object", "properties": {"notes": {"type": "array", "items": {"type": "string", "maxLength": 24},
                                                     "minItems": 40, "maxItems": 40}},
          "required": ["notes"], "additionalProperties": False}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqs", type=int, default=16)
    p.add_argument("--tokens", type=int, default=96)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from tenacia.serve.config import EngineConfig
    from tenacia.serve.engine import grammar as grammar_mod
    from tenacia.serve.engine import llm_engine
    from tenacia.serve.engine.grammar import compile_format
    from tenacia.serve.engine.llm_engine import LLMEngine
    from tenacia.serve.engine.sequence import SamplingParams
    from tenacia.serve.models import load_model

    torch.set_num_threads(args.threads)
    served = load_model("smollm2", torch.device("cpu"), torch.float32)
    engine = LLMEngine(served.model, served.tokenizer, eos_ids=served.eos_ids,
                       cfg=EngineConfig(max_num_seqs=args.seqs, kv_cache_tokens=32768), device=torch.device("cpu"))
    engine.warm_up()
    engine.grammars.prepare()
    spent = {"mask": 0.0, "advance": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    engine.grammars.mask_logits = timed("mask", engine.grammars.mask_logits)
    llm_engine.advance = timed("advance", grammar_mod.advance)
    grammar = compile_format({"type": "json_schema", "json_schema": {"name": "notes", "schema": SCHEMA}})
    prompt = served.tokenizer.encode("<|im_start|>user\nList short notes about Paris as JSON.<|im_end|>\n"
                                     "<|im_start|>assistant\n").ids

    def arm(constrained: bool, round_: int) -> tuple[float, int]:
        params = SamplingParams(max_tokens=args.tokens, temperature=0.8, seed=round_, ignore_eos=not constrained,
                                grammar=grammar if constrained else None)
        for i in range(args.seqs):
            engine.add_request(f"{constrained}-{round_}-{i}", prompt, params)
        tokens, t0 = 0, time.perf_counter()
        while engine.has_work():
            tokens += sum(len(d.token_ids) for d in engine.step())
        return time.perf_counter() - t0, tokens

    rows = {"free": [], "json_schema": []}
    for r in range(args.rounds):
        for constrained in (False, True):
            seconds, tokens = arm(constrained, r)
            rows["json_schema" if constrained else "free"].append(tokens / seconds)
    grammar_tokens = args.rounds * args.seqs * args.tokens
    result = {
        "seqs": args.seqs, "tokens_per_stream": args.tokens, "rounds": args.rounds, "threads": args.threads,
        "free_tokens_per_s": statistics.median(rows["free"]),
        "json_schema_tokens_per_s": statistics.median(rows["json_schema"]),
        "mask_us_per_token": 1e6 * spent["mask"] / grammar_tokens,
        "advance_us_per_token": 1e6 * spent["advance"] / grammar_tokens,
    }
    result["cost_pct"] = 100 * (1 - result["json_schema_tokens_per_s"] / result["free_tokens_per_s"])
    for key, value in result.items():
        print(f"{key:<28} {value:>10.1f}" if isinstance(value, float) else f"{key:<28} {value:>10}")
    print(f"wrote {write_results('structured-cost', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
