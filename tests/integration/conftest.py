import pytest

from .procs import Procs


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.kill_all()


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """Eval loss of a fault-free single-process run of the job every replica scenario runs
    (``test_replicas.RUN``), built once for the session: each scenario must end within 2% of it."""
    from tenacia.events import read_events

    from .procs import train_args
    from .test_replicas import RUN, RUN_LIMIT_S

    run = tmp_path_factory.mktemp("reference")
    p = Procs()
    try:
        assert p.run(train_args(run, *RUN), timeout=RUN_LIMIT_S, log=run / "log") == 0
    finally:
        p.kill_all()
    return [e for e in read_events(run / "events.jsonl") if e["event"] == "eval"][-1]["eval_loss"]
