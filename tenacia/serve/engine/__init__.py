"""The engine: requests in, tokens out, one ``step()`` at a time (schedule, run, postprocess).

- ``sequence.py``: one request's sequence and its sampling parameters;
- ``scheduler.py`` + ``block_pool.py``: continuous batching over a bounded cache, prefix caching;
- ``kv_cache.py``: the paged key/value cache and the attention over it;
- ``packed.py``: the model's layers laid out for inference, one forward for any device;
- ``cpu/``: what runs on a CPU: the decode kernels (one build per instruction set), MKL's packed
  products, huge pages and the allocator (its own index);
- ``runner.py``: a scheduled batch through the model; ``sampling.py``: the next tokens;
  ``detokenizer.py``: tokens to text and stop strings;
- ``llm_engine.py``: the synchronous engine; ``process_engine.py``: it in a process of its own.
"""
