"""Fault injection: real signals to real processes, real (namespaced) networks, wrong numbers in-process.

- ``killpoints.py``: a process kills itself at a named point of ``tenacia.hooks`` (crash tests);
- ``sdc.py``: wrong numbers (bit flips, NaN/Inf, stuck zeros, lr spikes) at the tamper sites of
  ``tenacia.hooks``, in-process and deterministic by seed;
- ``injector.py``: a run's ``[chaos]`` schedule, run as a plug-in of the replica launcher;
- ``cli.py``: ``tenacia chaos``, the same faults sent by hand to a running job;
- ``link.py``, ``netns.py``, ``forwarder.py``: test hosts in network namespaces joined by links
  with added delay and capped bandwidth.

Training never imports this package; ``tenacia.run`` installs it at each process's start.
"""
