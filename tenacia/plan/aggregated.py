"""Aggregated serving: prompts prefilled in chunks inside the decode steps, on the same chips.

vLLM, SGLang, TensorRT-LLM and NIM run this way by default (chunked prefill, in-flight
batching): a step carries every running sequence's decode rows and, when a prompt waits, a chunk
of it, up to ``ServePlan.chunk_tokens`` tokens in all. ``serving_step.decode_parts`` prices a step
with a chunk (its tokens join every GEMM's rows; each attends to half its prompt); this module
says how often a step carries one, and so what a token costs on average.

In steady state with ``B`` sequences decoding, each emitting ``accepted`` tokens a step, a
sequence finishes every ``output_len / accepted`` steps and a new prompt takes its place. Over
one sequence's decode the other ``B - 1`` are replaced, so the steps it waits on carry

    need = (B - 1) x prompt x accepted / output_len     prompt tokens a step, on average

(``prompt`` = input_len less the prefix-cache hits). A prompt goes in chunks of
``c = min(chunk_tokens, prompt)``, so a share ``need / c`` of the steps carry one:

    mean step = (1 - need / c) x decode(B) + need / c x decode(B, chunk c)     need <= c
              = decode(B, chunk need)                                          c < need <= chunk_tokens

and no such batch is sustainable beyond (the prompts would queue without end). The time per
output token is the mean step / accepted: what a client's inter-token latency averages to,
the steps stalled by others' prompts included; at one sequence it is a plain decode step (its
own prompt comes before its first token). The mean step grows with B (more rows, more prompts a
step), so a tighter target admits a smaller batch and throughput falls with it.

Time to first token: the prompt's ``ceil(prompt / chunk_tokens)`` steps with a chunk, queueing
not included. Not modelled: the sequences still waiting for their prefill (a closed loop of C
users decodes slightly fewer than C), the output head run only on a chunk's last token.
"""

from __future__ import annotations

import math

from .catalog import Chip
from .models import ModelSpec
from .serve_plan import ServePlan
from .serving_step import decode_parts


def prefill_need(plan: ServePlan, batch: float) -> float:
    """Prompt tokens a step must prefill on average to keep ``batch`` sequences decoding."""
    d = plan.demand
    return (batch - 1) * d.input_len * (1 - d.cache_hit_rate) * plan.speculation.accepted / d.output_len


def serving_parts(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, batch: int) -> dict:
    """The step of ``batch`` sequences on a ``tp``-chip instance by ``plan.deployment``: the decode
    step (``decode_parts``) when disaggregated; when aggregated its mean over the steps with and
    without a chunk (module docstring), with ``chunk_share`` (steps carrying one), ``chunk_tokens``
    (their size), ``prefill_tokens_per_step`` and ``ttft_s``; ``step_s`` and ``tpot_s`` inf when the
    prompts cannot keep up."""
    decode = decode_parts(m, chip, plan, tp, batch)
    if plan.deployment == "disaggregated":
        return decode
    d = plan.demand
    prompt = d.input_len * (1 - d.cache_hit_rate)
    need, chunk = prefill_need(plan, batch), min(plan.chunk_tokens, prompt)
    if need > plan.chunk_tokens:
        step, share, mixed = math.inf, 1.0, decode_parts(m, chip, plan, tp, batch, plan.chunk_tokens)
    elif need > chunk:
        share, mixed = 1.0, decode_parts(m, chip, plan, tp, batch, need)
        step = mixed["step_s"]
    else:
        share, mixed = need / chunk, decode_parts(m, chip, plan, tp, batch, chunk)
        step = (1 - share) * decode["step_s"] + share * mixed["step_s"]
    return decode | {"decode_step_s": decode["step_s"], "mixed_step_s": mixed["step_s"], "chunk_share": share,
                     "chunk_tokens": max(chunk, need), "prefill_tokens_per_step": need, "step_s": step,
                     "tpot_s": step / plan.speculation.accepted,
                     "ttft_s": math.ceil(prompt / plan.chunk_tokens) * mixed["step_s"]}


def tpot_s(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, batch: int) -> float:
    """Time per output token of ``batch`` sequences by ``plan.deployment`` (``serving_parts``)."""
    return serving_parts(m, chip, plan, tp, batch)["tpot_s"]
