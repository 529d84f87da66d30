"""Serving: a checkpoint in, tokens out over an OpenAI-compatible HTTP API.

- ``config.py``: ``ServeConfig``, the server's config tree; ``cli.py``: ``tenacia serve``;
- ``models.py``: what MODEL names (SmolLM2, a tenacia run through ``tenacia.checkpoint``, a
  Hugging Face directory) loaded with its tokenizer and chat template;
- ``server.py``: the socket, the engine process, uvicorn, draining on shutdown;
- ``api.py``, ``protocol.py``, ``responses.py``, ``chat.py``, ``guard.py``, ``metrics.py``: the
  HTTP side (routes, request bodies, response shapes, templates, keys and limits, Prometheus);
- ``engine/``: continuous batching over a paged KV cache (its own index); ``web/``: the chat page.
"""
