"""A replica run evaluates every ``train.eval_every`` committed steps (``replicas/evals.py``): real
replica processes, real gloo. Under ddp the run with evaluations ends in the same bits as the same
run without (equal fingerprints, byte-equal ledger, equal final eval loss); under diloco a step is
an outer round, and the evaluations follow the rounds."""

import json

import pytest

from tenacia.events import read_events

from .procs import train_args

# both replicas in the first quorum (starting a process takes seconds on a loaded host), so that the
# two ddp runs train the same shares in the same quorum and can be compared bit for bit
RUN = ["optim.warmup_steps=2", "replicas.count=2", "replicas.spares=0", "checkpoint.every=100",
       "replicas.join_grace_s=120"]
LIMIT_S = 180
pytestmark = pytest.mark.timeout(2 * LIMIT_S + 60)


def run_replicas(procs, run, *extra) -> list[dict]:
    run.mkdir()
    code = procs.run(train_args(run, *RUN, *extra), timeout=LIMIT_S, log=run / "launcher.log")
    assert code == 0, (run / "launcher.log").read_text()[-3000:]
    return read_events(run / "events.jsonl")


def evals(events) -> list[tuple[int, float]]:
    return [(e["step"], e["eval_loss"]) for e in events if e["event"] == "eval"]


def fingerprints(events, step: int) -> dict[int, str]:
    return {e["replica"]: e["fingerprint"] for e in events if e["event"] == "state_fingerprint" and e["step"] == step}


def metrics_evals(run) -> list[int]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [m["step"] for m in lines if "eval_loss" in m]


def test_ddp_replicas_evaluate_every_eval_every_steps_and_end_in_the_same_bits(tmp_path, procs):
    steps = 12
    plain = run_replicas(procs, tmp_path / "plain", f"train.steps={steps}")
    evaluated = run_replicas(procs, tmp_path / "evaluated", f"train.steps={steps}", "train.eval_every=4")
    for events in (plain, evaluated):  # the precondition of a comparison bit for bit
        assert [e["members"] for e in events if e["event"] == "step_committed"] == [[0, 1]] * steps
    assert [s for s, _ in evals(plain)] == [steps]
    assert [s for s, _ in evals(evaluated)] == [4, 8, 12]
    assert all(e["source"].startswith("replica:") for e in evaluated if e["event"] == "eval")
    assert metrics_evals(tmp_path / "evaluated") == [4, 8, 12]
    assert evals(evaluated)[-1] == evals(plain)[-1]
    prints = fingerprints(evaluated, steps)
    assert len(prints) == 2 and len(set(prints.values())) == 1, prints
    assert prints == fingerprints(plain, steps)
    assert (tmp_path / "evaluated" / "ledger.jsonl").read_bytes() == (tmp_path / "plain" / "ledger.jsonl").read_bytes()
    run = tmp_path / "evaluated"
    assert procs.run(["report", "--check", str(run)], timeout=120, log=run / "report.log") == 0, \
        (run / "report.log").read_text()[-2000:]
    assert json.loads((run / "report.json").read_text())["final_eval_loss"] == evals(evaluated)[-1][1]


def test_diloco_replicas_evaluate_every_eval_every_outer_rounds(tmp_path, procs):
    rounds = 4
    events = run_replicas(procs, tmp_path / "run", f"train.steps={rounds}", "replicas.sync=diloco",
                          "replicas.outer.inner_steps=2", "train.eval_every=2")
    assert [s for s, _ in evals(events)] == [2, 4]
    assert metrics_evals(tmp_path / "run") == [2, 4]
    prints = fingerprints(events, rounds)
    assert len(prints) == 2 and len(set(prints.values())) == 1, prints
    run = tmp_path / "run"
    assert procs.run(["report", "--check", str(run)], timeout=120, log=run / "report.log") == 0, \
        (run / "report.log").read_text()[-2000:]
    assert f"sample ledger: ok: {rounds} committed steps" in (run / "report.log").read_text()
