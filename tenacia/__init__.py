"""tenacia: fault-tolerant LLM training on any PyTorch backend, a portable server, a fleet planner.

Data enters at the corpus and leaves as a served token; each package imports only from those
below it (README, "Layout"; enforced by import-linter):

- ``config``, ``storage``, ``hooks``, ``faults``, ``events``, ``device``, ``shape``: the
  foundation (config trees, disk, plug-in points, the fault vocabulary, the event log, vendors,
  the model's torch-free shape);
- ``data`` -> ``model`` -> ``checkpoint`` -> ``train`` (``train.replicas`` on top): training;
- ``report`` (from the event log) -> ``plan`` (never torch);
- ``serve`` (from checkpoints), ``chaos`` (into training, through hooks);
- ``run``, ``info``, ``demo``, ``cli``: the commands at the top.
"""

__version__ = "0.1.0"
