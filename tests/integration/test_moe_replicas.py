"""A mixture of experts under replicas: the expert loads ride on the step's reduce, every replica
moves its balancing biases by the same sum, and a replica killed mid-run heals the biases with
the rest of the state. Real processes, real gloo.

After each run: every replica ends with the same state fingerprint (weights, moments and the
biases), the biases moved, the sample ledger proves exactly-once, and the metrics' loads count
every token of every step exactly once (no share counted twice, no audit or recheck counted).
"""

import json

import pytest
from safetensors.torch import load_file

from tenacia import config
from tenacia.data.dataset import prepare_data
from tenacia.data.ledger import SampleLedger
from tenacia.events import read_events
from tenacia.train.config import RunConfig

from ..train.moe_run import SMALL_MOE
from .procs import train_args

STEPS, BATCH, SEQ, TOP_K, LOG_EVERY = 16, 6, 32, 2, 4
RUN = [*SMALL_MOE, f"train.steps={STEPS}", f"train.batch_size={BATCH}", "train.micro_batch_size=2",
       f"data.seq_len={SEQ}", "data.max_bytes=60000", f"train.log_every={LOG_EVERY}", "checkpoint.every=8",
       "optim.warmup_steps=2", "replicas.count=3"]
pytestmark = pytest.mark.timeout(240)


def run_moe(procs, run, faults, *extra):
    args = train_args(run, *RUN, f"chaos.faults={json.dumps(faults)}", *extra)
    code = procs.run(args, timeout=180, log=run / "launcher.log")
    assert code == 0, (run / "launcher.log").read_text()[-3000:]


def check_moe_run(run, survivors=3):
    assert (run / "finished.json").exists()
    events = read_events(run / "events.jsonl")
    prints = {e["replica"]: e["fingerprint"] for e in events if e["event"] == "state_fingerprint" and e["step"] == STEPS}
    assert len(prints) >= survivors and len(set(prints.values())) == 1, f"replicas disagree at the end: {prints}"
    cfg = config.load(RunConfig, run / "config.toml")
    report = SampleLedger(run / "ledger.jsonl").verify(cfg.data.seed, len(prepare_data(cfg.data, cfg.model.vocab_size).train))
    assert report.ok and report.steps == STEPS, report
    final = load_file(str(sorted((run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))
    biases = [t for name, t in final.items() if name.endswith("expert_bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases), biases
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "expert_loads" in r]
    assert [r["step"] for r in train] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    for r in train:  # every token of the window once: the MoE block's T, the MTP block's T - 1 a sample
        assert [sum(layer) for layer in r["expert_loads"]] == [LOG_EVERY * BATCH * t * TOP_K for t in (SEQ, SEQ - 1)], r
    assert train[-1]["expert_bias"] == [[round(float(x), 6) for x in b] for b in biases]  # layers, then MTP
    return events


@pytest.mark.slow  # the kill test below covers the fault-free steps too
def test_replicas_sum_expert_loads_and_stay_identical(tmp_path, procs):
    run_moe(procs, tmp_path, [])
    check_moe_run(tmp_path)


def test_a_killed_replica_heals_its_expert_biases(tmp_path, procs):
    """Every normal step audited (peers' shares recomputed: their forwards must not count), a
    replica killed mid-step (the survivors salvage their shares: counted once), healed."""
    # killed at step 3, and replica 2 runs 5x slower from step 4 on: on a quiet machine a step takes
    # ~50 ms, and with the kill at step 7 the replacement healed at step 14 of 16 (0.4 s after the
    # kill); the slowdown keeps the run from ending before it is back
    run_moe(procs, tmp_path, ["kill:1@3", "slow:2@4:5"], "numerics.audit_p=1")
    events = check_moe_run(tmp_path)
    assert any(e["event"] == "fault_injected" and e.get("replica") == 1 for e in events)
    assert any(e["event"] == "heal_done" and e.get("replica") == 1 for e in events)
    assert any(e["event"] == "step_committed" and e["reused"] for e in events)
