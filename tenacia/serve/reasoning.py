"""Reasoning output: a model that thinks in ``<think>...</think>`` (DeepSeek-R1 style) has that
text sent as ``reasoning_content`` (DeepSeek's, SGLang's and llama.cpp's name) and as
``reasoning`` (vLLM's since 2026), both, so old and new clients read it; the rest is ``content``.

Contract:
- ``ThinkSplitter`` splits a choice's text as it arrives, piece by piece; pieces it cannot place
  yet (the start of a possible tag) are held back until the next piece or ``final``. Any way of
  cutting the text into pieces gives the same two strings: streamed deltas concatenate to the
  whole answer's fields (the whole answer is split by the same splitter, fed the same deltas).
- A think block is recognised only at the very start of the answer (after whitespace), or is
  open already when the prompt ends with ``<think>`` (R1's template opens it for the model); the
  first ``</think>`` closes it; everything after it is content, tags included.
- ``reasoning_tokens`` counts the tokens of the pieces that were reasoning (the piece that closes
  the block included), reported in ``usage.completion_tokens_details``.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


def thinks(mode: str, template_source: str) -> bool:
    """Whether answers are split: ``mode`` "think" or "none", or "auto": the chat template writes
    ``</think>`` (it knows the model's think blocks)."""
    return mode == "think" or (mode == "auto" and CLOSE in template_source)


@dataclass(slots=True)
class ThinkSplitter:
    state: str = "start"  # "start": a block may open; "think": inside it; "answer": content only
    held: str = ""
    reasoning_tokens: int = 0

    @classmethod
    def for_prompt(cls, prompt: str) -> ThinkSplitter:
        return cls(state="think" if prompt.rstrip().endswith(OPEN) else "start")

    def feed(self, text: str, tokens: int = 0, final: bool = False) -> tuple[str, str]:
        """Add ``text`` (of ``tokens`` tokens); returns the (reasoning, content) it releases."""
        buf, reasoning, content = self.held + text, "", ""
        self.held = ""
        thinking = self.state == "think"
        if self.state == "start":
            head = buf.lstrip()
            if head.startswith(OPEN):
                self.state, buf, thinking = "think", head[len(OPEN):], True
            elif OPEN.startswith(head) and not final:
                self.held = buf  # whitespace or the start of "<think>": wait for more
                return "", ""
            else:
                self.state = "answer"
        if self.state == "think":
            end = buf.find(CLOSE)
            if end >= 0:
                reasoning, buf, self.state = buf[:end], buf[end + len(CLOSE):], "answer"
            else:
                keep = 0 if final else partial_suffix(buf, CLOSE)
                reasoning, self.held, buf = buf[:len(buf) - keep], buf[len(buf) - keep:], ""
        if self.state == "answer":
            content = buf
        if thinking:
            self.reasoning_tokens += tokens
        return reasoning, content


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
