"""Runs another bench script on one thread, with every `time.perf_counter` reading this thread's
CPU time instead of the wall clock: a measurement that other jobs' load hardly moves (a thread
that is not scheduled spends no CPU time; contention for memory and caches still counts). For
A/B comparisons on a shared machine outside a quiet window, e.g. two checkouts side by side:

    cd OTHER_CHECKOUT && PYTHONPATH=$PWD .venv/bin/python /path/to/bench/cpu_time.py bench/serve_engine.py --rounds 3

The script must take ``--threads`` (bench/serve_engine.py does); it gets ``--threads 1``: with more
threads, CPU time would count the time OpenMP threads spin while waiting for each other.
"""

from __future__ import annotations

import runpy
import sys
import time

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    time.perf_counter = time.thread_time
    script = sys.argv[1]
    sys.argv = [script, "--threads", "1", *sys.argv[2:]]
    runpy.run_path(script, run_name="__main__")
