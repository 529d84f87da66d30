"""The engine: requests in, tokens out, one ``step()`` at a time (schedule, run, postprocess).

- ``sequence.py``: one request's sequence and its sampling parameters;
- ``scheduler.py`` + ``block_pool.py``: continuous batching over a bounded cache, prefix caching;
- ``kv_cache.py``: the paged key/value storage, what a token keeps in it (``CacheSpec``: keys and
  values, or a latent and a rotary key); ``attention.py``: the attention over it (a prefill's
  packed sequences); ``mirror.py``: a decode batch's contiguous copy of its keys;
- ``packed.py``: a Llama's layers laid out for inference, one forward for a decode and a
  prefill, every operation through the backend; ``packed_deepseek.py``: the same for a
  deepseek-v3 model (absorbed latent attention, experts);
- ``backend.py``: the torch backend (any device); ``cpu/``: the CPU backends (``cpu/backend.py``),
  the decode kernels (one build per instruction set), the timed products (MKL packed, oneDNN,
  the kernels' panels), huge pages and the allocator (its own index);
- ``runner.py``: a scheduled batch through the model; ``sampling.py``: the next tokens;
  ``detokenizer.py``: tokens to text and stop strings;
- ``llm_engine.py``: the synchronous engine; ``process_engine.py``: it in a process of its own.
"""
