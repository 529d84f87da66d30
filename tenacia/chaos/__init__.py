"""Fault injection: real signals to real processes, and real (namespaced) networks.

- ``killpoints.py``: a process kills itself at a named point of ``tenacia.hooks`` (crash tests);
- ``injector.py``: a run's ``[chaos]`` schedule, run as a plug-in of the replica launcher;
- ``cli.py``: ``tenacia chaos``, the same faults sent by hand to a running job;
- ``link.py``, ``netns.py``, ``forwarder.py``: test hosts in network namespaces joined by links
  with added delay and capped bandwidth.

Training never imports this package; ``tenacia.run`` installs it at each process's start.
"""
