"""prepare_data end to end: windows over the token file, the train/eval split, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tenacia.config import ConfigError, from_dict
from tenacia.data import tokenizer as tokenizer_module
from tenacia.data import tokens as tokens_module
from tenacia.data.config import DataConfig
from tenacia.data.dataset import prepare_data, split_windows
from tenacia.storage import cache_root


def config(corpus: Path, cache: Path, **overrides: object) -> DataConfig:
    fields = {"corpus": str(corpus), "cache_dir": str(cache), "seq_len": 16, "eval_fraction": 0.1} | overrides
    return DataConfig(**fields)  # type: ignore[arg-type]


def test_windows_are_slices_of_the_token_file(corpus_dir: Path, tmp_path: Path) -> None:
    data = prepare_data(config(corpus_dir, tmp_path / "cache"), vocab_size=300)
    tokens = np.asarray(data.tokens.tokens(), dtype=np.int64)
    n = (data.tokens.count - 1) // 16
    assert len(data.train) + len(data.eval) == n
    ids = [0, len(data.train) - 1, 3, 3]
    batch = data.train.get(ids)
    assert batch.dtype == torch.int64 and batch.shape == (4, 17)
    for row, sample_id in zip(batch, ids, strict=True):
        w = int(data.train.windows[sample_id])
        assert row.tolist() == tokens[w * 16: w * 16 + 17].tolist()
    # The text of a window decodes with the tokenizer that made it.
    assert data.tokenizer.decode(data.eval.get([0])[0].tolist())
    assert data.tokenizer_path.name == "tokenizer.json" and data.tokenizer_path.is_file()
    assert data.eval.get([]).shape == (0, 17)
    with pytest.raises(IndexError, match=rf"sample id {len(data.eval)} out of range"):
        data.eval.get([0, len(data.eval)])


def test_split_is_disjoint_spread_and_deterministic() -> None:
    train, held_out = split_windows(count=10_001, seq_len=10, eval_fraction=0.05)  # 1000 windows
    assert len(held_out) == 50 and len(train) == 950
    assert not set(train.tolist()) & set(held_out.tolist())
    assert sorted(train.tolist() + held_out.tolist()) == list(range(1000))
    assert held_out.min() < 100 and held_out.max() > 900  # spread over the corpus, not its tail
    again_train, again_eval = split_windows(count=10_001, seq_len=10, eval_fraction=0.05)
    assert np.array_equal(train, again_train) and np.array_equal(held_out, again_eval)
    train, held_out = split_windows(count=3, seq_len=1, eval_fraction=0.01)  # the smallest corpus
    assert train.tolist() == [0] and held_out.tolist() == [1]


def test_second_prepare_neither_trains_nor_tokenizes(corpus_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(corpus_dir, tmp_path / "cache")
    first = prepare_data(cfg, vocab_size=300)
    assert first.tokens.built

    def forbidden(*args: object) -> None:
        raise AssertionError("cached work was redone")

    monkeypatch.setattr(tokenizer_module, "train_bpe", forbidden)
    monkeypatch.setattr(tokens_module, "_encoded", forbidden)
    second = prepare_data(cfg, vocab_size=300)
    assert not second.tokens.built
    assert second.fingerprint == first.fingerprint
    assert second.tokenizer_path == first.tokenizer_path
    assert torch.equal(second.train.get(range(len(second.train))), first.train.get(range(len(first.train))))
    # The fingerprint names the samples: another seq_len cuts other windows from the same tokens.
    assert prepare_data(config(corpus_dir, tmp_path / "cache", seq_len=8), 300).fingerprint != first.fingerprint


def test_too_small_corpus_says_what_to_change(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"data\.seq_len.*at least 2 samples"):
        prepare_data(config(tiny, tmp_path / "cache", seq_len=64), vocab_size=300)


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENACIA_CACHE", str(tmp_path / "env"))
    assert cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert cache_root("") == tmp_path / "env"
    monkeypatch.delenv("TENACIA_CACHE")
    assert cache_root("") == Path.home() / ".cache" / "tenacia"


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.tokenizer.*'train', 'smollm2' or a path"):
        from_dict(DataConfig, {"tokenizer": str(tmp_path / "missing.json")}, prefix="data")
    with pytest.raises(ConfigError, match=r"data\.seed"):
        from_dict(DataConfig, {"seed": -1}, prefix="data")
    with pytest.raises(ConfigError, match=r"data\.jsonl_field"):
        from_dict(DataConfig, {"jsonl_field": ""}, prefix="data")
