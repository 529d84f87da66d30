"""The leader's record of committed steps: a step after a lost member counts as a stall, never as
a step time (so recoveries do not raise the hang bound), and metrics lines per window."""

import json

from tenacia.events import EventLog, read_events
from tenacia.train.replicas.protocol import Addrs, Quorum, Vote
from tenacia.train.replicas.steplog import StepLog
from tenacia.train.replicas.timing import Timing

from .fakes import FakeClock

Q = Quorum(quorum_id=3, term=1, leader=0, step=1, members=(0, 1), sharers=(0, 1), shares={0: (0, 1), 1: (2, 3)},
           heal={}, store="s", addrs={0: Addrs("c0", "h0"), 1: Addrs("c1", "h1")}, hang_timeout=0.5)


def votes(q: Quorum) -> dict[int, Vote]:
    return {r: Vote(replica=r, quorum_id=q.quorum_id, step=q.step, ok=True, ids=(2 * r, 2 * r + 1),
                    tokens=10, loss=float(r + 1)) for r in q.members}


def test_a_stall_is_not_a_step_time_and_metrics_come_per_window(tmp_path):
    clock = FakeClock()
    log = StepLog(events=EventLog(tmp_path / "events.jsonl", "coordinator:0"), run_dir=tmp_path, log_every=2,
                  total_steps=5, timing=Timing(), clock=clock)
    q = Q
    for dt in (0.0, 1.0, 1.0):  # steps 1, 2, 3
        clock.t += dt
        log.committed(q, votes(q))
        q = q.next_step(4)
    clock.t += 0.5
    log.stall_began()  # a member is lost 0.5 s after step 3
    clock.t += 1.5
    assert log.stalled_for() == 2.0  # counted from the last commit: the discarded work is part of it
    log.committed(q, votes(q))  # step 4, redone without it
    assert list(log.step_times) == [1.0, 1.0] and log.stalled_for() is None
    steps = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "step_committed"]
    assert [(e["step"], e["step_time_s"], e["stall_s"]) for e in steps] == [
        (1, None, None), (2, 1.0, None), (3, 1.0, None), (4, 2.0, 2.0)]
    assert steps[0]["loss"] == 1.5 and steps[0]["tokens"] == 20  # mean over the sharers' samples
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["loss"], x["members"]) for x in lines] == [(2, 1.5, 2), (4, 1.5, 2)]
    assert lines[1]["tokens_per_s"] == 40 / 3.0  # steps 3 and 4: their tokens over the 3 s since step 2
