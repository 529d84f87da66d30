"""The leader's numeric judgement, as a pure function of reports: direct verdicts from fingerprints,
triggers that start re-executions, and the three-way attribution from bit-exact comparisons."""

import math

from tenacia.train.config import NumericsConfig
from tenacia.train.numerics.judge import Judge, Outcome, Report, minority
from tenacia.train.numerics.stats import Ema, outliers

GOOD = Outcome("g", 3.0, 1.0)
BAD = Outcome("bad", 3.0, math.inf)


def report(own=GOOD, state="s", reduced="r", rest_ok=True, audits=(), rnorm=1.0):
    return Report(own=own, rnorm=rnorm, reduced=reduced, state=state, rest_ok=rest_ok, chunks=((0, 1),),
                  audits=audits)


def clean(n=4, **kw):
    return {r: report(own=Outcome(f"g{r}", 3.0 + 0.01 * r, 1.0 + 0.01 * r), **kw) for r in range(n)}


def test_a_clean_step_commits_and_teaches_the_baselines():
    j = Judge(NumericsConfig())
    assert j.on_votes(1, clean(), [0, 1, 2, 3]).action == "commit"
    assert j.loss.seen == 1 and j.norm.seen == 1


def test_state_changed_at_rest_heals_that_member_with_a_strike_without_reexecution():
    j = Judge(NumericsConfig())
    reps = clean()
    reps[2] = report(own=reps[2].own, rest_ok=False)
    d = j.on_votes(5, reps, [0, 1, 2, 3])
    assert (d.action, d.verdict, d.heal, d.strikes, d.recheck) == ("discard", "corrupt_state", [2], {2: 1}, None)


def test_a_minority_state_or_reduced_fingerprint_names_the_member_and_a_tie_blames_nobody():
    j = Judge(NumericsConfig())
    reps = clean(3)
    reps[1] = report(own=reps[1].own, reduced="other")
    d = j.on_votes(5, reps, [0, 1, 2])
    assert (d.verdict, d.heal) == ("corrupt_state", [1]) and "reduced gradients" in d.reason
    tie = {0: report(state="a"), 1: report(state="b")}
    d = j.on_votes(6, tie, [0, 1])
    assert (d.action, d.verdict, d.heal, d.strikes) == ("discard", "no_majority", [], {})
    assert minority({0: "a", 1: "a", 2: "b"}) == ([2], True) and minority({0: "a", 1: "b"}) == ([], False)


def test_second_strike_in_the_window_evicts_and_an_old_one_has_expired():
    j = Judge(NumericsConfig(strike_window_steps=100))
    reps = clean(3)
    reps[0] = report(own=reps[0].own, rest_ok=False)
    assert j.on_votes(10, reps, [0, 1, 2]).heal == [0]
    d = j.on_votes(200, reps, [0, 1, 2])  # the first strike is out of the window
    assert (d.heal, d.evict, d.strikes) == ([0], [], {0: 1})
    d = j.on_votes(250, reps, [0, 1, 2])
    assert (d.heal, d.evict, d.strikes) == ([], [0], {0: 2})


def test_a_nonfinite_local_value_starts_a_recheck_with_a_healthy_peer():
    j = Judge(NumericsConfig())
    reps = clean(3)
    reps[1] = report(own=Outcome("bad", 3.0, math.nan))
    d = j.on_votes(7, reps, [0, 1, 2])
    assert d.action == "recheck" and (d.recheck.suspect, d.recheck.peer, d.recheck.kind) == (1, 0, "nonfinite")


def attributed(suspect_run, peer_run, kind_bad=BAD, audits=None):
    j = Judge(NumericsConfig())
    reps = clean(3)
    reps[2] = report(own=kind_bad)
    if audits:
        reps[0] = report(own=reps[0].own, audits=audits)
        reps[2] = report(own=Outcome("g2", 3.02, 1.02))
    assert j.on_votes(9, reps, [0, 1, 2]).action == "recheck"
    return j, j.on_rechecked(9, suspect_run, peer_run)


def test_not_reproduced_is_a_transient_fault_and_the_step_is_redone():
    _, d = attributed(Outcome("good", 3.0, 1.0), Outcome("good", 3.0, 1.0))
    assert (d.action, d.verdict, d.strikes, d.evict, d.bench) == ("discard", "transient", {}, [], [])


def test_reproduced_but_the_peer_disagrees_is_a_strike_and_the_suspect_sits_out_the_redo():
    bad = Outcome("bad", 3.0, math.inf)
    j, d = attributed(bad, Outcome("good", 3.0, 1.0))
    assert (d.verdict, d.strikes, d.bench, d.evict) == ("faulty", {2: 1}, [2], [])
    assert j.watched(10) == {2: 9 + 16}  # audited every step for a while


def test_reproduced_and_confirmed_by_a_peer_is_instability_the_batch_is_skipped_nobody_struck():
    bad = Outcome("bad", 3.0, math.inf)
    j, d = attributed(bad, bad)
    assert (d.action, d.verdict, d.strikes, d.evict) == ("skip", "unstable", {}, [])
    assert j.strikes == {}


def test_an_audit_that_disagrees_is_a_trigger_and_an_auditor_in_error_repeats_its_audit():
    seen = Outcome("other", 3.02, 1.02)
    right = Outcome("g2", 3.02, 1.02)
    j, d = attributed(right, Outcome("other", 3.02, 1.02), audits=((2, seen),))
    assert (d.verdict, d.strikes) == ("faulty", {2: 1})  # the audited replica reproduced, the peer did not
    j, d = attributed(right, right, audits=((2, seen),))  # two devices agree: the auditor (0) is the suspect
    assert d.action == "recheck" and (d.recheck.suspect, d.recheck.of, d.recheck.peer_run) == (0, 2, right)
    d = j.on_rechecked(9, seen, right)  # it repeats its wrong audit: faulty, sits out the redo
    assert (d.action, d.verdict, d.strikes, d.bench) == ("discard", "faulty", {0: 1}, [0])
    j, d = attributed(right, right, audits=((2, seen),))
    d = j.on_rechecked(9, right, right)  # not reproduced: a transient error, the step stands
    assert (d.action, d.verdict, d.strikes) == ("commit", "auditor_transient", {})


def test_a_spike_over_time_triggers_only_after_the_warmup_and_when_far_above_the_baseline():
    cfg = NumericsConfig(warmup_steps=5)
    j = Judge(cfg)
    for step in range(1, 11):
        assert j.on_votes(step, clean(3), [0, 1, 2]).action == "commit"
    spiky = {r: report(own=Outcome(f"g{r}", 3.0 * cfg.loss_ratio * 1.1, 1.0)) for r in range(3)}
    d = j.on_votes(11, spiky, [0, 1, 2])
    assert d.action == "recheck" and d.recheck.kind == "spike" and "loss" in d.reason
    j2 = Judge(cfg)
    assert j2.on_votes(1, spiky, [0, 1, 2]).action == "commit"  # no baseline yet: nothing to compare


def test_robust_statistics():
    assert outliers({0: 1.0, 1: 1.1, 2: 0.9, 3: 500.0}, z=6, ratio=50) == [3]
    assert outliers({0: 1.0, 1: 1.1, 2: 0.9, 3: 8.0}, z=6, ratio=50) == []  # far in deviations, not in ratio
    assert outliers({0: 1.0, 1: 500.0}, z=6, ratio=50) == []  # two values: no median to trust
    e = Ema()
    for _ in range(30):
        e.update(2.0)
    assert e.spike(200.0, z=6, ratio=50, warmup=20) and not e.spike(4.0, z=6, ratio=50, warmup=20)
    assert not e.spike(math.nan, z=6, ratio=50, warmup=20)


def test_a_new_leader_takes_the_strikes_from_the_event_log():
    j = Judge(NumericsConfig())
    j.restore([{"event": "numeric_verdict", "step": 40, "strikes": {"2": 1}},
               {"event": "numeric_verdict", "step": 41, "strikes": {"1": 1}},
               {"event": "replica_evicted", "step": 41, "replica": 1}])
    assert j.strikes == {2: [40]}
    reps = clean(3)
    reps[2] = report(own=reps[2].own, rest_ok=False)
    assert j.on_votes(45, reps, [0, 1, 2]).evict == [2]  # its second strike


def transient_at(j, step, suspect=2):
    """Step ``step``: ``suspect``'s vote is bad, its re-execution is right (not reproduced)."""
    reps = clean(3)
    reps[suspect] = report(own=BAD)
    assert j.on_votes(step, reps, [0, 1, 2]).action == "recheck"
    return j.on_rechecked(step, Outcome("good", 3.0, 1.0), Outcome("good", 3.0, 1.0))


def test_transient_faults_that_recur_are_an_intermittent_fault_and_evict():
    """A chip wrong now and then (or only in what it sends) seldom reproduces its error in a
    re-execution: its third transient within the window evicts it; spread out, they never do."""
    j = Judge(NumericsConfig(strike_window_steps=100))
    assert transient_at(j, 10).verdict == "transient" and transient_at(j, 20).verdict == "transient"
    d = transient_at(j, 30)
    assert (d.action, d.verdict, d.suspect, d.evict) == ("discard", "intermittent", 2, [2])
    assert "intermittent fault" in d.reason and "within 100 steps" in d.reason
    j = Judge(NumericsConfig(strike_window_steps=100))
    assert [transient_at(j, s).verdict for s in (10, 120, 240, 360)] == ["transient"] * 4  # one per window
    j = Judge(NumericsConfig(transients_to_evict=0))
    assert [transient_at(j, s).verdict for s in range(10, 60, 10)] == ["transient"] * 5  # 0: never


def test_an_auditor_wrong_now_and_then_is_evicted_too():
    seen, right = Outcome("other", 3.02, 1.02), Outcome("g2", 3.02, 1.02)
    j = Judge(NumericsConfig())
    verdicts = []
    for step in (9, 19, 29):
        reps = clean(3)
        reps[0] = report(own=reps[0].own, audits=((2, seen),))
        reps[2] = report(own=right)
        assert j.on_votes(step, reps, [0, 1, 2]).action == "recheck"
        assert j.on_rechecked(step, right, right).action == "recheck"  # the auditor repeats its audit
        verdicts.append(j.on_rechecked(step, right, right))  # and does not reproduce it
    assert [d.verdict for d in verdicts] == ["auditor_transient", "auditor_transient", "intermittent"]
    assert (verdicts[-1].action, verdicts[-1].evict) == ("discard", [0])


def test_a_new_leader_takes_the_transient_faults_from_the_event_log():
    j = Judge(NumericsConfig())
    j.restore([{"event": "numeric_verdict", "step": 10, "verdict": "transient", "suspect": 2, "strikes": {}},
               {"event": "numeric_verdict", "step": 20, "verdict": "auditor_transient", "suspect": 2, "strikes": {}}])
    assert transient_at(j, 30).evict == [2]
