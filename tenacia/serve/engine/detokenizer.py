"""Token ids to text, one token at a time, and stop strings.

Byte-level BPE tokens can end in the middle of a UTF-8 character; the decoder holds such bytes
back until the character is complete, so a stream never shows a replacement character that the
full decode would not. Text that could be the beginning of a stop string is held back too, so
a stop string never reaches the client, even in a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenizers import Tokenizer


@dataclass(slots=True)
class TextState:
    """Text decoded so far for one sequence, and how much of it was handed out."""

    text: str = ""
    sent: int = 0  # characters of ``text`` already returned by ``take``
    prefix_offset: int = 0  # output tokens [prefix_offset, read_offset) give the text's tail
    read_offset: int = 0
    stop_scan_from: int = 0
    stops: list[str] = field(default_factory=list)

    @property
    def holdback(self) -> int:
        return max((len(s) for s in self.stops), default=1) - 1


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def append(self, state: TextState, output_ids: list[int], scan: bool = True) -> bool:
        """Decode the newest token of ``output_ids`` into ``state.text``. Returns True when a stop
        string appeared; the text is then cut just before it. ``scan=False`` (``min_tokens`` not
        reached yet) looks for none: a stop string that ends there does not stop the sequence later
        either, as in vLLM (only one reaching into later text can)."""
        prefix = self.tokenizer.decode(output_ids[state.prefix_offset:state.read_offset])
        full = self.tokenizer.decode(output_ids[state.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            state.text += full[len(prefix):]
            state.prefix_offset, state.read_offset = state.read_offset, len(output_ids)
        if not state.stops:
            return False
        if not scan:
            state.stop_scan_from = len(state.text)
            return False
        begin = max(0, state.stop_scan_from - state.holdback)
        hits = [i for i in (state.text.find(s, begin) for s in state.stops) if i >= 0]
        state.stop_scan_from = len(state.text)
        if hits:
            state.text = state.text[:min(hits)]
            return True
        return False

    @staticmethod
    def take(state: TextState, final: bool) -> str:
        """The text not handed out yet; unless ``final``, minus what might start a stop string."""
        end = len(state.text) if final else max(state.sent, len(state.text) - state.holdback)
        delta = state.text[state.sent:end]
        state.sent = end
        return delta
