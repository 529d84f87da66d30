"""Turns a scheduled batch into model inputs, runs the model, and samples.

The model (``PackedLlama`` or ``PackedDeepSeek``, the serving layout of its family) runs its own layers; the runner only
lays out tokens, positions and cache slots (handing the step's layout to ``PagedAttention``), and
computes the output projection for the rows that will be sampled (the last prompt token of each
finished prefill, every row of a decode) rather than for every prompt token; in a prefill the
model's last layer runs its output product and MLP on those rows alone (``keep`` of
``PackedLlama.hidden``: every row's key and value still reach the cache). A sequence that asks
for its prompt's logprobs (``SamplingParams.prompt_logprobs``) also has every prompt row of its
prefill run through every layer and projected, ``SCORE_ROWS`` rows at a time (a (rows, vocab) float32 block each), and scored
by the same ``token_logprobs`` as a generated token.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .attention import PagedAttention, PrefillLayout
from .grammar import Grammars
from .mirror import DecodeLayout
from .packed import PackedLlama
from .packed_deepseek import PackedDeepSeek
from .sampling import Sampler, token_logprobs
from .scheduler import Batch
from .sequence import Sequence, TokenLogprob

SCORE_ROWS = 256  # prompt rows projected to logits at once when scoring a prompt

class ModelRunner:
    def __init__(self, model: PackedLlama | PackedDeepSeek, attention: PagedAttention, device: torch.device,
                 grammars: Grammars | None = None):
        self.model, self.attention, self.device = model, attention, device
        self.cache = attention.cache
        self.sampler = Sampler(grammars, attention.backend.greedy)

    @torch.inference_mode()
    def run(self, batch: Batch) -> tuple[list[tuple[Sequence, int, TokenLogprob | None]], list[tuple[Sequence, str]]]:
        """Run one step; return (sequence, new token, logprob) for each sequence that sampled, and
        (sequence, why) for each whose sampling failed: a failure is one sequence's, never the
        batch's. Advances every scheduled sequence's ``num_cached``."""
        if batch.prefill:
            tokens, positions, rows, sampling = self._prepare_prefill(batch)
        else:
            tokens, positions, rows, sampling = self._prepare_decode(batch)
        for seq, n in zip(batch.seqs, batch.chunks, strict=True):
            seq.num_cached += n
        # a prefill's last layer runs on the sampled rows alone, unless a prompt is scored
        keep = rows if batch.prefill and sampling and not any(s.scores_prompt for s in batch.seqs) else None
        hidden = self.model.hidden(tokens, positions, self.attention, decode=not batch.prefill, keep=keep)
        if batch.prefill and keep is None:
            self._score_prompts(batch, hidden)
        if not sampling:  # a prompt chunk: it only filled the cache
            return [], []
        sampled_hidden = hidden if keep is not None else hidden[rows]  # (S, dim)
        logits = self.model.logits(sampled_hidden)  # (S, vocab)
        try:
            chosen, logprobs = self.sampler(logits, sampling)
        except Exception:  # one row's failure: find it, sample the others
            return self._sample_alone(self.model.logits(sampled_hidden), sampling)
        return list(zip(sampling, chosen, logprobs, strict=True)), []

    def _sample_alone(self, logits: Tensor, sampling: list[Sequence]):
        """Sample each row by itself after the batch's sampling raised. The sampler fails before
        any row draws (``Sampler``), so every generator is where it was and the rows that succeed
        get the tokens they would have got in the batch."""
        sampled, failed = [], []
        for i, seq in enumerate(sampling):
            try:
                (token,), (logprob,) = self.sampler(logits[i:i + 1], [seq])
            except Exception as e:  # reported to this sequence's request alone
                failed.append((seq, f"sampling failed: {type(e).__name__}: {e}"))
            else:
                sampled.append((seq, token, logprob))
        return sampled, failed

    def _score_prompts(self, batch: Batch, hidden: Tensor) -> None:
        """Extend ``prompt_logprobs`` of each sequence in ``batch`` that scores its prompt: the row
        at position p (of this step's chunk) predicts prompt token p + 1. hidden: (tokens, dim)."""
        first_row = 0
        for seq, n in zip(batch.seqs, batch.chunks, strict=True):
            start = seq.num_cached - n  # run() advanced num_cached already
            if seq.scores_prompt:
                lo = max(start, len(seq.prompt_logprobs) - 1)
                hi = min(start + n, len(seq.prompt_ids) - 1)
                k = seq.params.prompt_logprobs
                for p in range(lo, hi, SCORE_ROWS):
                    q = min(p + SCORE_ROWS, hi)
                    rows = hidden[first_row + p - start:first_row + q - start]
                    logprobs = self.model.logits(rows).log_softmax(dim=1)  # (q - p, vocab)
                    seq.prompt_logprobs += token_logprobs(logprobs, seq.prompt_ids[p + 1:q + 1], [k] * (q - p))
            first_row += n

    def _tensor(self, values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    def _prepare_prefill(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, list[Sequence]]:
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        starts, context_slots, rows, sampling = [], [], [], []
        bs = self.cache.block_size
        for seq, n in zip(batch.seqs, batch.chunks, strict=True):
            start = seq.num_cached
            table = seq.block_table
            seq_slots = [table[p // bs] * bs + p % bs for p in range(start + n)]
            tokens += seq.tokens[start:start + n]
            positions += range(start, start + n)
            slots += seq_slots[start:]
            starts.append(start)
            context_slots.append(self._tensor(seq_slots) if start > 0 else None)
            if start + n == seq.num_tokens:  # the prompt is complete: sample from its last token
                rows.append(len(tokens) - 1)
                sampling.append(seq)
        self.attention.begin_prefill(PrefillLayout(self._tensor(slots), list(batch.chunks), starts, context_slots))
        return self._tensor(tokens), self._tensor(positions), self._tensor(rows), sampling

    def _prepare_decode(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, list[Sequence]]:
        seqs = batch.seqs
        last = [s.num_tokens - 1 for s in seqs]
        slots = [self.cache.slot(s.block_table, p) for s, p in zip(seqs, last, strict=True)]
        self.attention.begin_decode(DecodeLayout(self._tensor(slots), tuple((s.request_id, s.index) for s in seqs),
                                             [s.num_tokens for s in seqs], [s.block_table for s in seqs]))
        tokens = self._tensor([s.last_token for s in seqs])  # (B,)
        positions = self._tensor(last)
        return tokens, positions, torch.arange(len(seqs), device=self.device), seqs
