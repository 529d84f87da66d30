"""Next-token choice for a batch of sequences, each with its own parameters and generator.

The order is vLLM's: the response format's grammar mask (``grammar.py``), logit bias, the ``min_tokens`` mask of EOS and stop tokens, repetition
penalty, presence and frequency penalties (these four apply to greedy rows too); then, for sampled
rows only, temperature, min-p, top-k, top-p and the draw.

Every operation works row by row, and each row draws from its own ``torch.Generator``: a
sequence's tokens depend on its logits and its seed only, not on which other sequences share the
batch. Rows that need no sampling (greedy) take the argmax and leave their generator untouched.
Each step touches only the rows that use it, and a batch in which no row does pays a Python scan
of its parameters, no tensor work: the decode step of plain requests stays as fast as before.

Log-probabilities are those of the model's distribution, before bias, masks, penalties,
temperature and truncation (as OpenAI and vLLM report them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .grammar import Grammars
from .sequence import Sequence, TokenLogprob


def apply_logit_bias(logits: Tensor, seqs: list[Sequence]) -> Tensor:
    """Add each row's ``logit_bias`` (token id -> bias) to its logits. logits: (B, V) float32,
    modified in place and returned."""
    biased = [(i, s.params.logit_bias) for i, s in enumerate(seqs) if s.params.logit_bias]
    if not biased:
        return logits
    bias = [b for _, row in biased for b in row.values()]
    logits.index_put_(_cells(biased, logits.device), torch.tensor(bias, dtype=logits.dtype, device=logits.device),
                      accumulate=True)
    return logits


def _cells(per_row: list, device: torch.device) -> tuple[Tensor, Tensor]:
    """Index tensors (rows, columns) of every pair (i, t), t in ids, for (i, ids) in ``per_row``."""
    rows = [i for i, ids in per_row for _ in ids]
    cols = [t for _, ids in per_row for t in ids]
    return torch.tensor(rows, device=device), torch.tensor(cols, device=device)


def early_stop_ids(seq: Sequence) -> list[int]:
    """The tokens ``seq`` may not produce yet: EOS (unless ignored) and its stop_token_ids while
    fewer than ``min_tokens`` tokens were generated; none afterwards."""
    p = seq.params
    if len(seq.output_ids) >= p.min_tokens:
        return []
    return ([] if p.ignore_eos else sorted(seq.eos_ids)) + list(p.stop_token_ids)


def mask_early_stops(logits: Tensor, seqs: list[Sequence]) -> Tensor:
    """Set the logits of each row's ``early_stop_ids`` to -inf (vLLM's ``min_tokens``).
    logits: (B, V) float32, modified in place and returned."""
    masked = [(i, ids) for i, s in enumerate(seqs) if (ids := early_stop_ids(s))]
    if not masked:
        return logits
    logits[_cells(masked, logits.device)] = float("-inf")
    return logits


def _seen(seq: Sequence, vocab: int, device: torch.device) -> Tensor:
    """The sequence's (vocab,) mask of tokens in its prompt or output, kept on the sequence and
    extended by the tokens added since the last step (not rebuilt from the whole context)."""
    if seq.seen is None:
        seq.seen, seq.seen_upto = torch.zeros(vocab, dtype=torch.bool, device=device), 0
    n_prompt = len(seq.prompt_ids)
    new = (seq.prompt_ids[seq.seen_upto:] + seq.output_ids if seq.seen_upto < n_prompt
           else seq.output_ids[seq.seen_upto - n_prompt:])
    if new:
        seq.seen[torch.tensor(new, dtype=torch.int64, device=device)] = True
        seq.seen_upto += len(new)
    return seq.seen


def apply_repetition_penalty(logits: Tensor, seqs: list[Sequence]) -> Tensor:
    """Hugging Face's ``RepetitionPenaltyLogitsProcessor``, row by row: the logit of every token in
    the prompt or the output so far is divided by ``repetition_penalty`` when positive and
    multiplied by it when negative. logits: (B, V) float32, modified in place and returned."""
    rows = [i for i, s in enumerate(seqs) if s.params.repetition_penalized]
    if not rows:
        return logits
    device = logits.device
    seen = torch.stack([_seen(seqs[i], logits.size(1), device) for i in rows])  # (R, V)
    penalty = torch.tensor([seqs[i].params.repetition_penalty for i in rows], dtype=logits.dtype,
                           device=device).unsqueeze(1)  # (R, 1)
    idx = torch.tensor(rows, device=device)
    sub = logits[idx]
    penalized = torch.where(sub < 0, sub * penalty, sub / penalty)
    logits[idx] = torch.where(seen, penalized, sub)
    return logits


def apply_penalties(logits: Tensor, seqs: list[Sequence]) -> Tensor:
    """Subtract ``frequency_penalty * count + presence_penalty * (count > 0)`` of each token
    generated so far, per row. logits: (B, V) float32, modified in place and returned."""
    rows = [i for i, s in enumerate(seqs) if s.params.penalized and s.output_ids]
    if not rows:
        return logits
    V = logits.size(1)
    counts = torch.zeros(len(rows), V, dtype=logits.dtype, device=logits.device)
    for j, i in enumerate(rows):
        ids = torch.tensor(seqs[i].output_ids, dtype=torch.int64, device=logits.device)
        counts[j].index_add_(0, ids, torch.ones_like(ids, dtype=logits.dtype))
    freq = torch.tensor([seqs[i].params.frequency_penalty for i in rows], device=logits.device)
    pres = torch.tensor([seqs[i].params.presence_penalty for i in rows], device=logits.device)
    idx = torch.tensor(rows, device=logits.device)
    logits[idx] -= freq[:, None] * counts + pres[:, None] * (counts > 0).to(logits.dtype)
    return logits


def truncate(logits: Tensor, top_k: Tensor, top_p: Tensor, min_p: Tensor | None = None) -> Tensor:
    """Keep each row's tokens at least ``min_p`` times as likely as its best (None: all), then its
    ``top_k`` best tokens (0: all) and its smallest nucleus of mass ``top_p``. logits: (B, V),
    temperature applied; top_k: (B,) int64; top_p, min_p: (B,) float32. Returns masked logits
    (-inf outside)."""
    V = logits.size(1)
    if min_p is not None:  # p < min_p * p_max  <=>  logit < max logit + log(min_p)
        floor = logits.max(dim=1, keepdim=True).values + min_p.log().unsqueeze(1)  # (B, 1)
        logits = logits.masked_fill(logits < floor, float("-inf"))
    if bool((top_k > 0).any()):
        k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
        kth = logits.topk(int(k.max()), dim=1).values.gather(1, (k - 1).unsqueeze(1))  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if bool((top_p < 1.0).any()):
        sorted_logits, order = logits.sort(dim=1, descending=True)
        probs = sorted_logits.softmax(dim=1)
        before = probs.cumsum(dim=1) - probs  # mass of the tokens strictly better than this one
        drop = before >= top_p.unsqueeze(1)
        drop[:, 0] = False  # the best token always stays, even for a top_p that rounds to 0 in float32
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(1, order, sorted_logits)
    return logits


def first_max(logits: Tensor) -> Tensor:
    """(B, V) -> (B,) int64: each row's first column of its largest value."""
    return logits.max(dim=1).indices


class Sampler:
    """Chooses one token per row of ``logits`` (B, V) float32. ``grammars``: the engine's
    ``Grammars``, which masks the rows of sequences with a response format (None: no such rows).
    ``greedy``: the greedy rows' choice, each row's first column of its largest value (the
    backend's ``greedy``: the CPU kernels' is a vector pass where torch's max walks a row one
    float at a time)."""

    def __init__(self, grammars: Grammars | None = None, greedy: Callable[[Tensor], Tensor] = first_max):
        self.grammars, self.greedy = grammars, greedy

    def __call__(self, logits: Tensor, seqs: list[Sequence]) -> tuple[list[int], list[TokenLogprob | None]]:
        want_logprobs = [s.params.logprobs is not None for s in seqs]
        logprobs = logits.log_softmax(dim=1) if any(want_logprobs) else None
        if self.grammars is not None:
            logits = self.grammars.mask_logits(logits, seqs)
        logits = apply_logit_bias(logits, seqs)
        logits = mask_early_stops(logits, seqs)
        logits = apply_repetition_penalty(logits, seqs)
        logits = apply_penalties(logits, seqs)
        # (B,): the greedy rows' answer, the first maximum of each row
        choice = self.greedy(logits)
        sampled = [i for i, s in enumerate(seqs) if not s.params.greedy]
        if sampled:
            chosen = self._sample([seqs[i] for i in sampled], logits[sampled])
            choice[sampled] = chosen
        tokens = choice.tolist()
        return tokens, self._logprobs(logprobs, tokens, seqs, want_logprobs)

    @staticmethod
    def _sample(seqs: list[Sequence], logits: Tensor) -> Tensor:
        device = logits.device
        temperature = torch.tensor([s.params.temperature for s in seqs], device=device)
        top_k = torch.tensor([s.params.top_k for s in seqs], dtype=torch.int64, device=device)
        top_p = torch.tensor([s.params.top_p for s in seqs], dtype=torch.float32, device=device)
        min_ps = [s.params.min_p for s in seqs]
        min_p = torch.tensor(min_ps, dtype=torch.float32, device=device) if any(min_ps) else None
        probs = truncate(logits / temperature.unsqueeze(1), top_k, top_p, min_p).softmax(dim=1)
        # checked before any row draws, so a failing row leaves every generator untouched
        valid = torch.isfinite(probs).all(dim=1) & (probs.sum(dim=1) > 0)
        if not bool(valid.all()):
            raise FloatingPointError(f"no valid distribution to sample from for {int((~valid).sum())} "
                                     "sequence(s): their sampling parameters overflow float32")
        out = torch.empty(len(seqs), dtype=torch.int64, device=device)
        for i, seq in enumerate(seqs):  # one draw per row, from that row's own generator
            out[i] = torch.multinomial(probs[i], 1, generator=seq.generator)[0]
        return out

    @staticmethod
    def _logprobs(logprobs: Tensor | None, tokens: list[int], seqs: list[Sequence],
                  want: list[bool]) -> list[TokenLogprob | None]:
        if logprobs is None:
            return [None] * len(seqs)
        rows = [i for i, w in enumerate(want) if w]
        scored = token_logprobs(logprobs[torch.tensor(rows, device=logprobs.device)], [tokens[i] for i in rows],
                                [seqs[i].params.logprobs for i in rows])
        out: list[TokenLogprob | None] = [None] * len(seqs)
        for i, lp in zip(rows, scored, strict=True):
            out[i] = lp
        return out


def token_logprobs(logprobs: Tensor, tokens: list[int], ks: list[int]) -> list[TokenLogprob]:
    """Score one token per row. logprobs: (R, V), the log-softmax of the raw logits; tokens: (R,)
    the token of each row; ks: how many top alternatives each row reports. The token's value and
    the alternatives are read from the same tensor, so a token that is its row's most likely has
    exactly (bit for bit) the value of the top entry. Used for generated and prompt tokens alike."""
    device = logprobs.device
    chosen = logprobs[torch.arange(len(tokens), device=device), torch.tensor(tokens, device=device)].tolist()
    k = max(ks, default=0)
    top_v, top_i = (t.tolist() for t in logprobs.topk(k, dim=1)) if k > 0 else ([], [])
    return [TokenLogprob(token_id=t, logprob=c, top=list(zip(top_i[j][:ki], top_v[j][:ki], strict=True)) if ki else [])
            for j, (t, c, ki) in enumerate(zip(tokens, chosen, ks, strict=True))]
