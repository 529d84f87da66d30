"""Which sequences run in the next step: continuous batching over a bounded cache.

Contract:
- Sequences join the running set between steps, as soon as the cache has blocks for their tokens
  and fewer than ``max_num_seqs`` are running; they leave as soon as they finish. A sequence that
  does not fit yet waits, in arrival order.
- A sequence that joins takes the cached blocks of its prompt's longest cached prefix
  (``block_pool.py``); only the rest of its prompt is prefilled. One that scores its prompt
  (``Sequence.scores_prompt``) takes none: each of its prompt tokens must be run to be scored.
- A step is either a prefill (new prompts, up to ``max_batched_tokens`` tokens; a longer prompt is
  split into chunks over several steps) or a decode (one token for every running sequence whose
  prompt is in the cache). Prefill goes first, so a new request waits at most one decode step;
  but while sequences decode, a prefill takes at most ``prefill_while_decoding`` tokens and the
  next step is a decode, so a running sequence waits at most one such prefill for its next token
  (without this, a long prompt's chunks ran back to back and stopped every stream for all of
  them: 7.2 s for a 4,000-token prompt of SmolLM2-135M on 2 CPU cores, 1.3 s at most in turns of
  512 tokens, for 11% more time to the prompt's first token; docs/benchmarks.md, 2026-12-05).
- A decode that needs a new block when none is free preempts the newest running sequence: its
  blocks are freed and it goes back to the front of the queue, to be prefilled again (prompt and
  outputs so far) when memory frees up. The engine rejects a request that could not fit even alone,
  so preemption always makes progress.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .block_pool import BlockPool
from .sequence import Sequence, Status


@dataclass(slots=True)
class Batch:
    """One step's work. For a prefill, ``chunks[i]`` new tokens of ``seqs[i]`` are run, starting at
    its ``num_cached``; for a decode, one token each."""

    prefill: bool
    seqs: list[Sequence]
    chunks: list[int]


class Scheduler:
    def __init__(self, allocator: BlockPool, *, max_num_seqs: int, max_batched_tokens: int,
                 prefill_while_decoding: int | None = None):
        self.allocator = allocator
        self.max_num_seqs, self.max_batched_tokens = max_num_seqs, max_batched_tokens
        self.prefill_while_decoding = min(prefill_while_decoding or max_batched_tokens, max_batched_tokens)
        self.last_was_prefill = False
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Batch | None:
        decoding = any(seq.prefilled for seq in self.running)
        if decoding and self.last_was_prefill:  # the running sequences' turn (module docstring)
            batch = self._schedule_decode() or self._schedule_prefill(self.prefill_while_decoding)
        else:
            batch = (self._schedule_prefill(self.prefill_while_decoding if decoding else self.max_batched_tokens)
                     or self._schedule_decode())
        self.last_was_prefill = batch is not None and batch.prefill
        return batch

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark ``seq`` finished and give its blocks back."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        elif seq.status is Status.WAITING:
            self.waiting.remove(seq)
        self._release(seq)
        seq.status, seq.finish_reason = Status.FINISHED, reason

    def abort(self, request_id: str) -> list[Sequence]:
        """Finish every unfinished sequence of ``request_id`` with reason ``abort``."""
        seqs = [s for s in (*self.running, *self.waiting) if s.request_id == request_id]
        for seq in seqs:
            self.finish(seq, "abort")
        return seqs

    def _release(self, seq: Sequence) -> None:
        self.allocator.free(seq.block_table)
        seq.block_table, seq.num_cached, seq.registered = [], 0, 0

    def _schedule_prefill(self, budget: int) -> Batch | None:
        seqs, chunks = [], []
        for seq in self.running:  # prompts chunked in an earlier step come first
            if budget == 0:
                break
            if seq.num_cached < seq.num_tokens and not seq.prefilled:
                n = min(seq.num_tokens - seq.num_cached, budget)
                seqs.append(seq)
                chunks.append(n)
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            tokens = seq.tokens
            hits = [] if seq.scores_prompt else self.allocator.match(tokens)  # a cached prefix's blocks
            need = self.allocator.blocks_for(seq.num_tokens) - len(hits)
            if need > self.allocator.num_free:
                self.allocator.free(hits)
                break  # first come, first served: later arrivals do not overtake it
            self.waiting.popleft()
            self.allocator.count_lookup(len(tokens), len(hits))
            seq.block_table = hits + self.allocator.allocate(need)
            seq.num_cached = seq.registered = len(hits)
            seq.num_cached *= self.allocator.block_size
            seq.status = Status.RUNNING
            self.running.append(seq)
            n = min(seq.num_tokens - seq.num_cached, budget)
            seqs.append(seq)
            chunks.append(n)
            budget -= n
        return Batch(True, seqs, chunks) if seqs else None

    def _schedule_decode(self) -> Batch | None:
        bs = self.allocator.block_size
        seqs = []
        for seq in list(self.running):
            if seq.status is not Status.RUNNING or not seq.prefilled:
                continue  # preempted in this loop
            # The token fed this step is written at position num_tokens - 1.
            while len(seq.block_table) * bs < seq.num_tokens and seq.status is Status.RUNNING:
                if self.allocator.num_free > 0:
                    seq.block_table += self.allocator.allocate(1)
                else:
                    self._preempt(self.running[-1])
            if seq.status is Status.RUNNING:
                seqs.append(seq)
        seqs = [s for s in seqs if s.status is Status.RUNNING]
        return Batch(False, seqs, [1] * len(seqs)) if seqs else None

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
