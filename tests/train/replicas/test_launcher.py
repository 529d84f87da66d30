"""The launcher's supervision rules, driven with a fake clock and stand-in processes: restarts
after a doubling backoff, within a budget whose end is logged once per replica left dead."""

from tenacia.events import read_events
from tenacia.train.config import ReplicaConfig, RunConfig, TrainConfig
from tenacia.train.replicas.launcher import Child, Launcher
from tenacia.train.replicas.step_exits import EXIT_FINISH_LOST


class FakeProc:
    """A replica process whose exit the test decides."""

    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def launcher(tmp_path, **replicas) -> tuple[Launcher, list[FakeProc]]:
    cfg = RunConfig(train=TrainConfig(run_dir=str(tmp_path)), replicas=ReplicaConfig(count=2, **replicas))
    lau = Launcher(cfg)
    started: list[FakeProc] = []

    def replace(replica: int, join: list[str]) -> tuple[Child, str]:
        started.append(FakeProc())
        return Child(replica, started[-1]), "new process"

    lau.replace = replace
    lau.addresses = lambda exclude=None: []
    lau.children = {r: Child(r, FakeProc()) for r in (0, 1)}
    return lau, started


def events(tmp_path, name: str) -> list[dict]:
    return [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == name]


def test_restarts_back_off_doubling_up_to_the_cap(tmp_path):
    lau, started = launcher(tmp_path, restart_budget=10, restart_backoff_s=1.5)
    now = 0.0
    for failure, backoff in enumerate([1.5, 3.0, 5.0, 5.0], start=1):
        lau.children[1].proc.returncode = -9
        assert lau.supervise_once(now) is None
        assert events(tmp_path, "replica_exited")[-1]["backoff_s"] == backoff
        assert lau.supervise_once(now + backoff - 0.01) is None and len(started) == failure - 1  # not yet
        assert lau.supervise_once(now + backoff) is None and len(started) == failure  # restarted
        assert lau.children[1].failures == failure  # consecutive failures are carried over
        now += backoff + 1.0
    assert [e["attempt"] for e in events(tmp_path, "replica_restarted")] == [1, 2, 3, 4]


def test_the_spent_budget_is_logged_once_per_replica_left_dead(tmp_path):
    lau, started = launcher(tmp_path, restart_budget=1, restart_backoff_s=0.2)
    lau.children[1].proc.returncode = 1
    lau.supervise_once(0.0)
    lau.supervise_once(0.2)
    assert len(started) == 1 and lau.restarts == 1
    started[0].returncode = 1  # the restarted process fails too: the budget is spent
    for tick in range(100):  # two seconds of supervisor ticks
        assert lau.supervise_once(0.3 + tick * 0.02) is None  # replica 0 still runs
    lau.children[0].proc.returncode = -9
    assert lau.supervise_once(2.5) == 1  # nobody left: the launcher ends, not finished
    exhausted = events(tmp_path, "restart_budget_exhausted")
    assert [(e["replica"], e["code"]) for e in exhausted] == [(1, 1), (0, -9)]
    assert len(started) == 1
    assert events(tmp_path, "launcher_done")[-1]["finished"] is False


def test_nothing_is_restarted_once_the_run_finished(tmp_path):
    lau, started = launcher(tmp_path, restart_budget=5)
    (tmp_path / "finished.json").write_text("{}")
    lau.children[0].proc.returncode, lau.children[1].proc.returncode = 0, -9
    assert lau.supervise_once(0.0) == 0
    assert started == [] and not events(tmp_path, "replica_exited")
    assert events(tmp_path, "launcher_done")[-1]["finished"] is True


def test_a_replica_still_alive_after_the_finish_is_stopped_so_the_launcher_ends(tmp_path):
    lau, started = launcher(tmp_path)
    stopped = []
    lau.shutdown = lambda: stopped.append(True) or setattr(lau.children[1].proc, "returncode", -15)
    (tmp_path / "finished.json").write_text("{}")
    lau.children[0].proc.returncode = 0  # replica 1 was frozen through the finish and never continued
    assert lau.supervise_once(100.0) is None and stopped == []
    assert lau.supervise_once(100.0 + lau.timing.after_finish_s - 0.1) is None and stopped == []
    assert lau.supervise_once(100.0 + lau.timing.after_finish_s + 0.1) is None and stopped == [True]
    assert events(tmp_path, "replicas_stopped_after_finish")[0]["replicas"] == [1]
    assert lau.supervise_once(111.0) == 0 and started == []  # the stopped one is not restarted


def test_an_evicted_replica_comes_back_at_once_on_a_slot_never_used_and_its_slot_stays_banned(tmp_path):
    from tenacia.train.replicas.device_slot import EXIT_EVICTED

    lau, started = launcher(tmp_path, restart_budget=5, restart_backoff_s=3.0)
    assert lau.slots == {0: 0, 1: 1}
    lau.children[1].proc.returncode = EXIT_EVICTED
    lau.supervise_once(10.0)
    assert len(started) == 1 and lau.slots == {0: 0, 1: 2} and lau.banned == {1}  # no backoff
    assert not events(tmp_path, "replica_exited")
    banned = events(tmp_path, "device_banned")
    assert [(e["replica"], e["slot"], e["replacement_slot"]) for e in banned] == [(1, 1, 2)]
    again, _ = launcher(tmp_path)  # the job's launcher started again (a resume): the ban holds
    again.restore_bans()
    assert again.banned == {1} and again.slots == {0: 0, 1: 2}


def test_the_launcher_and_the_config_tree_read_no_torch():
    """The launcher supervises; its replicas import torch. A launcher that imported it too put a
    whole torch import (seconds) before the first replica's on every start."""
    import subprocess
    import sys

    code = ("import sys, tenacia.run, tenacia.train.replicas.launcher, tenacia.train.config, "
            "tenacia.chaos.injector; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_nothing_is_restarted_once_a_replica_exited_after_the_final_stop(tmp_path):
    """The leader fails after its final stop, before writing ``finished.json``: its peers exited 0
    (a replica does so only once the job is over), so it is not restarted to train again alone from
    step 0; nor is one whose backoff was still running when a peer exited 0."""
    lau, started = launcher(tmp_path, restart_budget=5, restart_backoff_s=1.0)
    lau.children[0].proc.returncode = -15
    assert lau.supervise_once(0.0) is None and 0 in lau.pending  # a failure mid-run: restarted after 1 s
    lau.children[1].proc.returncode = 0
    assert lau.supervise_once(2.0) == 1  # the job ended meanwhile: nobody left, nobody restarted
    assert started == [] and not lau.pending and not events(tmp_path, "replica_restarted")
    lau, started = launcher(tmp_path, restart_budget=5)  # the leader found it did not hold the last step
    lau.children[1].proc.returncode, lau.children[0].proc.returncode = 0, EXIT_FINISH_LOST
    assert lau.supervise_once(10.0) == 1 and started == []
    assert events(tmp_path, "launcher_done")[-1]["finished"] is False  # no finished.json: said so
