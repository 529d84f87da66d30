"""Configuration of the corpus, tokenizer and sampler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import check

NAMED_TOKENIZERS = ("train", "smollm2")


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Where training text comes from and how it is cut into samples.

    Paths (``corpus``, ``tokenizer``) must exist when the config is built, so a typo is rejected
    before any work starts.
    """

    # "stdlib": the Python standard library's own source files (present on every machine), or a
    # path to a .txt/.jsonl file or a directory of them.
    corpus: str = "stdlib"
    jsonl_field: str = "text"  # the field holding the text in a JSONL corpus
    max_bytes: int = 8_000_000  # read at most this many UTF-8 bytes of text from the corpus (0: all)
    # "train": a byte-level BPE of model.vocab_size tokens trained on the corpus (cached by content
    # hash); or a path to a tokenizer.json; or "smollm2" for SmolLM2's own tokenizer.
    tokenizer: str = "train"
    seq_len: int = 256  # tokens per sample (each sample holds seq_len + 1 tokens: inputs+target)
    eval_fraction: float = 0.01  # share of samples held out for the eval loss
    seed: int = 0  # sampler order
    cache_dir: str = ""  # token and tokenizer cache; "" means $TENACIA_CACHE or ~/.cache/tenacia

    def __post_init__(self) -> None:
        check(self.seq_len > 0, "seq_len", self.seq_len, "a positive integer")
        check(0.0 < self.eval_fraction < 0.5, "eval_fraction", self.eval_fraction,
              "a number strictly between 0 and 0.5")
        check(self.max_bytes >= 0, "max_bytes", self.max_bytes, "0 (no limit) or a positive integer")
        check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        check(bool(self.jsonl_field), "jsonl_field", self.jsonl_field, "a non-empty field name")
        check(self.corpus == "stdlib" or Path(self.corpus).expanduser().exists(), "corpus",
              self.corpus, "'stdlib' or a path to an existing .txt/.jsonl file or a directory of them")
        check(self.tokenizer in NAMED_TOKENIZERS or Path(self.tokenizer).expanduser().is_file(),
              "tokenizer", self.tokenizer,
              "'train', 'smollm2' or a path to an existing tokenizer.json")
