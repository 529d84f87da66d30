"""The planner: what a run costs on a fleet before buying one. Never imports torch.

Inputs: ``models.py`` (dense and MoE shapes; tenacia's own presets through ``tenacia.shape``),
``catalog.py`` + ``catalog.toml`` (chips, with sources), ``fleet.py``, ``layout.py``,
``assumptions.py``; ``inputs.py`` turns command-line words into the config tree.
Models: ``training.py`` (step time per link level), ``estimate.py`` (a whole fleet, layout
search), ``sites.py`` (a fleet over several sites: ``links.py`` between them, ``sync.py`` the
strategy, ``quality.py`` the tokens it needs), ``reliability.py`` (failure rates, recovery strategies), ``montecarlo.py`` (completion
under failures), ``serving.py`` (throughput and chips for a demand), ``calibrate.py`` (recovery
times measured by a tenacia run, through ``tenacia.report``; the link efficiency of a slow-link run).
Out: ``scenario.py`` (one run of the whole chain), ``report.py`` (tables, JSON), ``charts.py``,
``cli.py`` (``tenacia plan``).
"""
