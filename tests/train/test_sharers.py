"""A newcomer healed in a quorum's first step shares the batch from the quorum's second step on."""

from tenacia.events import EventLog
from tenacia.train.config import ReplicaConfig
from tenacia.train.coordinator import Coordinator

from .fakes import FakeConn


def vote(replica: int, q: dict, ids: list[int]) -> dict:
    return {"type": "vote", "replica": replica, "quorum_id": q["quorum_id"], "step": q["step"], "ok": True,
            "start": 0, "ids": ids, "batch": list(range(12)), "tokens": 16 * len(ids), "loss": 1.0}


def test_healed_newcomer_joins_the_sharers_after_the_heal_step_commits(tmp_path):
    coord = Coordinator(replica=0, term=1, host="127.0.0.1", cfg=ReplicaConfig(count=3), total_steps=100,
                        events=EventLog(tmp_path / "events.jsonl", "coordinator:0"), ledger=None,
                        expected={0, 1, 2}, run_dir=tmp_path, batch_size=12)
    try:
        conns = {r: FakeConn() for r in range(3)}
        for r, committed in ((0, 5), (1, 5), (2, 0)):  # replica 2 is a restarted newcomer
            coord.on_hello(conns[r], {"type": "hello", "replica": r, "control": f"c{r}", "heal": f"h{r}",
                                      "committed": committed})
        q = next(m for m in conns[2].sent if m["type"] == "quorum")
        assert (q["step"], q["sharers"], q["heal"]) == (6, [0, 1], {"2": 0})
        for r, ids in ((0, list(range(6))), (1, list(range(6, 12))), (2, [])):
            coord.on_message(r, vote(r, q, ids))
        assert conns[2].sent[-1] == {"type": "verdict", "quorum_id": q["quorum_id"], "step": 6, "commit": True}
        assert coord.quorum["quorum_id"] == q["quorum_id"]  # no new quorum, no new process group
        assert (coord.quorum["step"], coord.quorum["sharers"], coord.quorum["heal"]) == (7, [0, 1, 2], {})
    finally:
        coord.close()
