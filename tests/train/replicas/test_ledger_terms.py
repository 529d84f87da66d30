"""The leader writes its term into every ledger record, so that a deposed leader's late write is
ignored by the verifier: here the old leader of term 1, paused between its fence check and its
write, records step 70 after the new leader of term 2 took over and recorded it again."""

import json

from tenacia.data.ledger import SampleLedger
from tenacia.data.sampler import Sampler
from tenacia.events import EventLog
from tenacia.train.config import ReplicaConfig
from tenacia.train.replicas.coordinator import Coordinator
from tenacia.train.replicas.protocol import Hello, Quorum, Resolve, Vote
from tenacia.train.replicas.timing import Timing

from .fakes import FakeConn

SAMPLES, SEED, BATCH = 1000, 3, 12


def batch(step: int) -> tuple[int, list[int]]:
    start = BATCH * (step - 1)
    return start, Sampler(SAMPLES, SEED).ids_at(start, BATCH)


def test_a_takeover_records_under_its_term_and_a_late_write_of_the_old_term_is_ignored(tmp_path):
    ledger = SampleLedger(tmp_path / "ledger.jsonl")
    old = SampleLedger(tmp_path / "ledger.jsonl")  # the deposed leader's handle on the same file
    old.rewind(0, term=1)
    for step in range(1, 70):
        old.record(step, *batch(step), term=1)
    coord = Coordinator(replica=1, term=2, host="127.0.0.1", cfg=ReplicaConfig(count=3), timing=Timing(),
                        total_steps=100, events=EventLog(tmp_path / "events.jsonl", "coordinator:1"),
                        ledger=ledger, expected={1, 2}, run_dir=tmp_path, batch_size=BATCH, takeover_from=0.0)
    try:
        conns = {r: FakeConn() for r in (1, 2)}
        start, ids = batch(70)
        for r in (1, 2):  # both hold step 70's reduced gradients: the new leader commits it
            pending = Vote(replica=r, quorum_id=1, step=70, ok=True, start=start, batch=tuple(ids))
            coord.on_hello(conns[r], Hello(replica=r, control=f"c{r}", heal=f"h{r}", committed=69, pending=70,
                                           pending_vote=pending))
        q = next(m for m in conns[2].sent if isinstance(m, Quorum))
        assert q.resolve == Resolve(step=70, commit=True) and q.term == 2
    finally:
        coord.close()
    old.record(70, start, [0] * BATCH, term=1)  # the old leader wakes and writes what it had
    old.close()
    written = [json.loads(line) for line in ledger.path.read_text().splitlines()]
    assert [(r["kind"], r["step"], r["term"]) for r in written[-3:]] == [("rewind", 69, 2), ("step", 70, 2),
                                                                          ("step", 70, 1)]
    report = SampleLedger(ledger.path).verify(SEED, SAMPLES)
    assert report.ok, report.problem
    assert (report.steps, report.ignored_stale) == (70, 1)
