"""Work sized to measured speed and stragglers (``replicas/speed.py``): the sizing rule on
hand-computed cases, the straggler rule on a moved clock, and the leader sizing a diloco round's
shares from its votes and carrying them in the verdict."""

from tenacia.train.replicas.protocol import Verdict, Vote
from tenacia.train.replicas.speed import SpeedLog, sized_shares, stable_shares

from .test_coordinator_rules import Leader


def test_shares_follow_speed_by_the_largest_remainder():
    # 32 samples at speeds 100:100:50: 32 * (0.4, 0.4, 0.2) = 12.8, 12.8, 6.4 -> 12, 12, 6 (30), and the
    # two largest remainders (0.8, 0.8: replicas 0 and 1) -> 13, 13, 6
    shares = sized_shares([0, 1, 2], 32, {0: 100.0, 1: 100.0, 2: 50.0})
    assert {r: (s[0], len(s)) for r, s in shares.items()} == {0: (0, 13), 1: (13, 13), 2: (26, 6)}


def test_unmeasured_sharers_count_at_the_median_and_nothing_measured_is_even():
    assert sized_shares([0, 1], 8, {0: 30.0}) == {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}
    assert sized_shares([3, 5, 7], 7, {}) == {3: (0, 1, 2), 5: (3, 4), 7: (5, 6)}
    # a very slow member keeps one sample
    assert [len(s) for s in sized_shares([0, 1], 10, {0: 1000.0, 1: 1.0}).values()] == [9, 1]


def test_under_speculation_shares_are_resized_at_their_ends():
    current = {0: (0, 1, 2, 3), 1: (4, 5, 6, 7), 2: (8, 9, 10, 11)}
    # sizes 3, 5, 4: replica 0 gives up its last position (3), replica 1 takes it at its end
    sized = sized_shares([0, 1, 2], 12, {0: 60.0, 1: 100.0, 2: 80.0})
    assert [len(s) for s in sized.values()] == [3, 5, 4]
    assert stable_shares(sized, current) == {0: (0, 1, 2), 1: (4, 5, 6, 7, 3), 2: (8, 9, 10, 11)}
    # replica 1 shrinks to 2, replica 2 grows to 6: what it gave up (6, 7) goes to replica 2's end
    sized = {0: (0, 1, 2, 3), 1: (4, 5), 2: (6, 7, 8, 9, 10, 11)}
    assert stable_shares(sized, current) == {0: (0, 1, 2, 3), 1: (4, 5), 2: (8, 9, 10, 11, 6, 7)}
    # another batch or other members: the sized shares as they are
    assert stable_shares(sized, {0: (0, 1), 1: (2, 3)}) == sized
    assert stable_shares(sized, None) == sized


def vote(r, tokens, compute_s, reused=0):
    return Vote(replica=r, quorum_id=1, step=1, ok=True, tokens=tokens, compute_s=compute_s, reused=reused)


def test_a_member_under_a_tenth_of_the_median_for_a_minute_is_a_straggler_once():
    log = SpeedLog(straggler_s=60.0)
    fast = {r: vote(r, 1000, 1.0) for r in (0, 1, 2)}
    log.observe({**fast, 2: vote(2, 1000, 20.0), 3: vote(3, 1000, 1.0, reused=4)})  # a salvaged share: no measurement
    assert log.speeds() == {0: 1000.0, 1: 1000.0, 2: 50.0}
    assert log.stragglers([0, 1, 2], now=100.0) == []
    assert log.stragglers([0, 1, 2], now=159.0) == []
    assert log.stragglers([0, 1, 2], now=160.0) == [(2, 50.0, 1000.0, 60.0)]
    assert log.stragglers([0, 1, 2], now=300.0) == []  # reported once
    for _ in range(5):
        log.observe(fast)  # it recovered
    assert log.stragglers([0, 1, 2], now=301.0) == []
    for _ in range(5):
        log.observe({2: vote(2, 1000, 20.0)})
    assert log.stragglers([0, 1, 2], now=302.0) == [] and log.stragglers([0, 1, 2], now=362.0)[0][0] == 2


def test_the_leader_sizes_a_diloco_rounds_shares_and_the_verdict_carries_them(tmp_path):
    lead = Leader(tmp_path, sync="diloco")
    try:
        lead.hello(0, 1, 2)
        lead.run_for(1.1)
        q = lead.coord.quorum
        assert [len(q.shares[r]) for r in (0, 1, 2)] == [4, 4, 4]  # nothing measured yet: even
        for r, compute_s in ((0, 1.0), (1, 1.0), (2, 3.0)):
            lead.coord.on_message(r, Vote(replica=r, quorum_id=q.quorum_id, step=q.step, ok=True, start=0,
                                          ids=q.shares[r], batch=tuple(range(12)), tokens=400, compute_s=compute_s))
        # speeds 400, 400, 133: 12 * (3/7, 3/7, 1/7) = 5.14, 5.14, 1.71 -> 5, 5, 1, and the largest remainder
        # (0.71, replica 2's) -> 5, 5, 2
        verdict = [m for m in lead.conns[1].sent if isinstance(m, Verdict)][-1]
        assert verdict.commit and verdict.shares == {0: (0, 1, 2, 3, 4), 1: (5, 6, 7, 8, 9), 2: (10, 11)}
        assert lead.coord.quorum.step == q.step + 1 and lead.coord.quorum.shares == verdict.shares
        # each member's compute and tokens, in members order: its wait in the round is the rest
        committed = lead.events("step_committed")[-1]
        assert (committed["compute_s"], committed["member_tokens"]) == ([1.0, 1.0, 3.0], [400, 400, 400])
    finally:
        lead.coord.close()
