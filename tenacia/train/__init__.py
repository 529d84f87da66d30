"""Training: a model learns from the data path's samples, one committed step at a time.

- ``config.py``: ``RunConfig``, the whole config tree of a run, and the sections training owns;
- ``step.py``: one step in two halves (gradients, then the update), where replicas must agree;
- ``trainer.py``: the single-process trainer: data, model, optimizer, checkpoints, resume;
- ``metrics.py``: ``metrics.jsonl``; ``progress.py``: the live progress line;
- ``replicas/``: fault-tolerant data-parallel replicas built on the trainer (its own index).

Faults are never injected from here: training reaches the named points of ``tenacia.hooks`` and
reads its ``[chaos]`` section as plain data (``tenacia.faults``); ``tenacia.chaos`` acts.
"""
