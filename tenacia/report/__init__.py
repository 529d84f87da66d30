"""What a run's faults cost, read from its logs.

- ``summary.py``: ``events.jsonl`` and ``metrics.jsonl`` -> goodput, per-fault detection, stall,
  healing and recovery times (``analyze``), stored as ``report.json`` (``write``);
- ``plot.py``: the membership timeline and loss curve as ``timeline.png``;
- ``cli.py``: ``tenacia report RUN_DIR``.

It reads only the event log's schema (``tenacia.events``, docs/events.md), never training code,
so the planner can calibrate itself on a run's measured recovery times.
"""
