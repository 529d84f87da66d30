"""Replicas survive crashes, hangs, a dead coordinator, a death while healing or while writing a
checkpoint, and the loss of every replica. Real processes, real gloo, real signals.

After each scenario: the run finishes, every replica alive at the end holds the same state
(fingerprint over weights, moments, step and sampler), the sample ledger proves exactly-once, and
the final eval loss is within 2% of a fault-free run's. Timing bounds carry a 3x margin; the exact
goals are measured by bench/faults.py.
"""

import json
import random
import signal
from pathlib import Path

import pytest

from tenacia import config
from tenacia.data.dataset import prepare_data
from tenacia.data.ledger import SampleLedger
from tenacia.events import read_events
from tenacia.train.config import RunConfig

from .procs import train_args, wait_for

STEPS = 100
RUN = [f"train.steps={STEPS}", "checkpoint.every=40", "optim.warmup_steps=10", "train.batch_size=32",
       "train.micro_batch_size=16"]
# Safety limits, not speed assertions: a run takes 20-40 s on the 2-core machines this suite runs
# on, the first test also pays for the module's reference run, and a slow CPU must not turn a
# working run into a failure (the speed of recovery is asserted from the event log's times).
RUN_LIMIT_S = 240
pytestmark = pytest.mark.timeout(2 * RUN_LIMIT_S + 60)


def check_run(run, reference, survivors_at_least=2, procs=None):
    """The run's own proofs, read in Python; given ``procs``, also through `tenacia report --check`."""
    assert (run / "finished.json").exists(), (run / "logs").iterdir()
    events = read_events(run / "events.jsonl")
    prints = {e["replica"]: e["fingerprint"] for e in events if e["event"] == "state_fingerprint" and e["step"] == STEPS}
    assert len(prints) >= survivors_at_least, prints
    assert len(set(prints.values())) == 1, f"replicas disagree at the end: {prints}"
    cfg = config.load(RunConfig, run / "config.toml")
    data = prepare_data(cfg.data, cfg.model.vocab_size)
    report = SampleLedger(run / "ledger.jsonl").verify(cfg.data.seed, len(data.train))
    assert report.ok and report.steps == STEPS, report
    final = json.loads((run / "finished.json").read_text())["eval_loss"]
    assert abs(final - reference) <= 0.02 * reference, (final, reference)
    if procs is not None:  # what a user or a CI job asserts without Python
        assert procs.run(["report", "--check", str(run)], timeout=120, log=run / "report.log") == 0, \
            (run / "report.log").read_text()[-2000:]
        out = (run / "report.log").read_text()
        assert f"sample ledger: ok: {STEPS} committed steps" in out and "fingerprint(s) equal" in out, out[-2000:]
    return events


def run_replicas(procs, run, n, faults, *extra, timeout=RUN_LIMIT_S):
    args = train_args(run, *RUN, f"replicas.count={n}", f"chaos.faults={json.dumps(faults)}", *extra)
    code = procs.run(args, timeout=timeout, log=run / "launcher.log")
    assert code == 0, (run / "launcher.log").read_text()[-3000:]


def first_after(events, name, t, **match):
    for e in events:
        if e["event"] == name and e["t"] >= t and all(e.get(k) == v for k, v in match.items()):
            return e
    raise AssertionError(f"no {name} {match} after t={t}")


def test_kill_at_random_step(tmp_path, procs, reference):
    """kill -9 by hand with `tenacia chaos`, at a seeded random step."""
    step = random.Random(2026).randint(20, 60)  # early enough for the replacement to heal before the end
    launcher = procs.start(train_args(tmp_path, *RUN, "replicas.count=3"), log=tmp_path / "launcher.log")
    wait_for(lambda: any(e["event"] == "step_committed" and e["step"] >= step
                         for e in read_events(tmp_path / "events.jsonl")), RUN_LIMIT_S, f"step {step}")
    assert procs.run(["chaos", "kill", str(tmp_path), "--replica", "1"], timeout=30) == 0
    assert launcher.wait(timeout=RUN_LIMIT_S) == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    events = check_run(tmp_path, reference, procs=procs)
    fault = first_after(events, "fault_injected", 0, replica=1)
    detected = first_after(events, "failure_detected", fault["t"], replica=1)
    assert detected["kind"] == "crash" and detected["t"] - fault["t"] < 3.0  # goal: 1 s
    healed = first_after(events, "heal_done", fault["t"], replica=1)
    assert healed["bytes"] > 0
    # the planner takes this run's measured recovery times as its live-recovery inputs
    from tenacia.plan.calibrate import read_calibration

    cal = read_calibration(tmp_path)
    assert 0 < cal.medians["detection_s"] < 3.0 and cal.medians["heal_s"] == healed["heal_s"]


def test_random_kills_at_a_seeded_rate(tmp_path, procs, reference):
    """[chaos] kill_rate: Poisson kills, times and replicas drawn from the seed (seed 541 at 0.3 per
    second over 4 s: replica 1 at 1.5 s, then replica 0, the first leader, at 3.1 s, counted from
    the first committed step; the fastest 200-step run seen lasted 6.7 s from there (100 steps now), and a replica started
    afresh heals ~1.9 s after its kill)."""
    from tenacia.chaos.injector import random_kills

    planned = random_kills(0.3, 4.0, 3, seed=541)
    assert [r for _, r in planned] == [1, 0]
    run_replicas(procs, tmp_path, 3, [], "chaos.kill_rate=0.3", "chaos.kill_rate_duration_s=4", "chaos.seed=541")
    events = check_run(tmp_path, reference)
    kills = [e for e in events if e["event"] == "fault_injected" and e["kind"] == "kill_rate"]
    assert [e["replica"] for e in kills] == [1, 0], kills
    start = next(e["t"] for e in events if e["event"] == "step_committed")
    for (offset, _), kill in zip(planned, kills, strict=True):
        assert offset <= kill["t"] - start < offset + 1.0  # the launcher reads the log every 50 ms
        leader = [e["coordinator"] for e in events if e["event"] == "coordinator_changed" and e["t"] < kill["t"]][-1]
        if kill["replica"] == leader:  # a survivor takes over coordination: that is the detection
            detected = first_after(events, "coordinator_changed", kill["t"])
            assert detected["coordinator"] != leader
        else:
            detected = first_after(events, "failure_detected", kill["t"], replica=kill["replica"])
            assert detected["kind"] == "crash"
        assert detected["t"] - kill["t"] < 3.0  # goals: 1 s for a crash, 2 s for a takeover
    # (healing is not asserted: a kill of the leader while replica 1 still heals from it delays
    # that heal by seconds, close to the end of a fast run; test_replica_killed_while_healing
    # covers it)


def test_sigstop_then_sigcont(tmp_path, procs, reference):
    # stopped at step 30 until the survivors have committed step 50 without it: the stop lasts steps,
    # not seconds, so a fast machine cannot finish the run before the replica is back to heal
    run_replicas(procs, tmp_path, 3, ["hang:2@30:+20"])
    events = check_run(tmp_path, reference)
    fault = first_after(events, "fault_injected", 0, replica=2)
    detected = first_after(events, "failure_detected", fault["t"], replica=2)
    # declared while the replica is still stopped; the rule itself (no heartbeat for the hang bound)
    # is tested with a fake clock in test_hang_detection; 2.5 s is a 5x margin on the 0.5 s bound
    assert detected["kind"] == "hang" and detected["t"] < fault["t"] + 2.5
    # the survivors go on without it (the stop can only end once they have committed step 50): the
    # first step committed after the detection is the next one, without replica 2. The stop lands
    # asynchronously: the step replica 2 had already sent its share of may still commit with it,
    # after the fault's event (which names the step the injector saw), so at most one more.
    before = max((e for e in events if e["event"] == "step_committed" and e["t"] < detected["t"]), key=lambda e: e["t"])
    nxt = first_after(events, "step_committed", detected["t"])
    assert 2 not in nxt["members"] and nxt["step"] == before["step"] + 1, (nxt, before)
    assert before["step"] <= fault["step"] + 1, (before, fault)
    # salvage: the survivors had computed their shares of the step in flight and kept them
    assert nxt["reused"] > 0, nxt
    first_after(events, "heal_done", fault["t"], replica=2)


def test_frozen_leader_is_replaced_with_every_survivor_in_the_first_quorum(tmp_path, procs, reference):
    """A survivor sent back to the stopped leader (by a peer that has not noticed yet) must not wait
    out a connect timeout there and miss the new leader's first quorum."""
    run_replicas(procs, tmp_path, 3, ["hang:0@40:2.5"])
    events = check_run(tmp_path, reference)
    fault = first_after(events, "fault_injected", 0, replica=0)
    takeover = first_after(events, "coordinator_changed", fault["t"])
    quorum = first_after(events, "quorum_changed", takeover["t"])
    assert takeover["coordinator"] == 1 and quorum["members"] == [1, 2], quorum
    nxt = first_after(events, "step_committed", takeover["t"])
    # The step in flight at the freeze is either committed by the new leader from the survivors'
    # ready (reduced) gradients, or discarded and run again by the new quorum reusing what the
    # survivors had computed of it: which one depends on where in the step the freeze landed.
    assert nxt["members"] == [1, 2], nxt
    assert nxt.get("reason") == "decided by the new leader after takeover" or nxt["reused"] > 0, nxt
    assert nxt["t"] < fault["t"] + 2.5  # committed while the old leader is still frozen


def test_coordinator_killed(tmp_path, procs, reference):
    run_replicas(procs, tmp_path, 3, ["kill_coordinator@50"])
    events = check_run(tmp_path, reference)
    fault = first_after(events, "fault_injected", 0, kind="kill_coordinator")
    takeover = first_after(events, "coordinator_changed", fault["t"])
    assert takeover["coordinator"] != fault["replica"]
    assert takeover["t"] - fault["t"] < 2.0  # the bound, no launcher help involved
    assert first_after(events, "step_committed", takeover["t"])["t"] - fault["t"] < 6.0


def test_replica_killed_while_healing(tmp_path, procs, reference):
    run_replicas(procs, tmp_path, 3, ["kill:1@20", "kill_healing@20"])
    events = check_run(tmp_path, reference)
    healing_kill = first_after(events, "fault_injected", 0, kind="kill_healing")
    assert healing_kill["replica"] == 1
    # it died mid-heal: its heal started and had not finished when the kill came
    started = [e for e in events if e["event"] == "heal_started" and e["replica"] == 1 and e["t"] <= healing_kill["t"]]
    assert started and not any(e["event"] == "heal_done" and e["replica"] == 1
                               and started[-1]["t"] <= e["t"] <= healing_kill["t"] for e in events)
    first_after(events, "failure_detected", healing_kill["t"], replica=1)


def test_replica_killed_during_checkpoint_write(tmp_path, procs, reference):
    run_replicas(procs, tmp_path, 3, ["kill_checkpoint@40"])
    events = check_run(tmp_path, reference)
    exits = [e for e in events if e["event"] == "replica_exited" and e["code"] == -signal.SIGKILL]
    assert exits, "the leader was not killed during its checkpoint write"
    saved = [e["step"] for e in events if e["event"] == "checkpoint_saved"]
    assert 40 not in saved and 80 in saved


def test_all_replicas_lost_then_resume_with_other_count(tmp_path, procs, reference):
    args = train_args(tmp_path, *RUN, "replicas.count=3")
    launcher = procs.start(args, log=tmp_path / "launcher.log")
    ckpt = tmp_path / "checkpoints" / "step_00000040"
    wait_for(lambda: ckpt.exists() and any(
        e["event"] == "step_committed" and e["step"] >= 50 for e in read_events(tmp_path / "events.jsonl")),
        RUN_LIMIT_S, "step 50")
    pids = [json.loads(p.read_text())["pid"] for p in (tmp_path / "replicas").glob("r*.json")]
    procs.kill(launcher)  # every replica dies with it (parent-death signal)
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 30, "the replicas to be gone")
    newest = max(int(p.name[5:]) for p in (tmp_path / "checkpoints").glob("step_*"))
    run_replicas(procs, tmp_path, 2, [])
    events = check_run(tmp_path, reference)
    resumed = [e for e in events if e["event"] == "resumed"]
    assert [e["step"] for e in resumed] == [newest] and newest >= 40


def test_slow_replica_is_a_straggler_not_a_failure(tmp_path, procs, reference):
    """A replica slowed 3x (SIGSTOP duty cycle) is never declared failed, and the run keeps committing.

    The slowdown is proven by the injector's own account (``slow_ended``: the stops it delivered and
    their measured length), not by a ratio of step times, which other load on the machine moves.
    """
    run_replicas(procs, tmp_path, 2, ["slow:1@70:3"])
    events = check_run(tmp_path, reference)
    fault = first_after(events, "fault_injected", 0, kind="slow")
    assert not [e for e in events if e["event"] == "failure_detected"]
    committed_after = {e["step"] for e in events if e["event"] == "step_committed" and e["t"] > fault["t"]}
    assert committed_after >= set(range(75, STEPS + 1)), sorted(committed_after)
    ended = first_after(events, "slow_ended", fault["t"], replica=1)
    # 29+ steps of two replicas in lock-step, each ~0.1 s or more while one is held stopped two thirds
    # of every 0.1 s: well over ten stops; lower bounds only, which load can only make easier
    assert ended["cycles"] >= 10 and ended["stopped_s"] >= 0.5, ended
