"""Nothing written before breaks: a run directory as the landed version wrote it (``landed_run/``,
see its README: a ledger whose records carry no term, a checkpoint whose manifest carries none)
resumes with this version, bit for bit as if it had run straight, and proves itself with
``tenacia report --check``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tenacia.data.ledger import SampleLedger

LANDED = Path(__file__).parent / "landed_run"

# The fixtures were written with torch's AVX2 kernels (the machine's best then). Torch dispatches its
# own vectorised ops (norms, softmax, the optimizer's foreach ops) by CPU: on a CPU with AVX-512 they
# sum in another order, so a straight run there differs from the fixture's first steps in the last
# bits. Every run here is pinned to the fixture's kernels, which any x86-64 CPU with AVX2 runs.
HAS_AVX2 = " avx2" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
ENV = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="the fixtures' arithmetic is torch's AVX2 kernels; "
                                "this CPU has no AVX2")
ARGS = ["model.preset=micro", "model.dim=32", "model.n_layers=1", "model.ffn_dim=64", "data.seq_len=32",
        "train.batch_size=8", "train.micro_batch_size=4", "train.eval_batches=2", "train.eval_every=0",
        "train.progress=false", "device.threads=1", "checkpoint.every=3", "checkpoint.keep=1",
        "checkpoint.background=false", f"data.corpus={LANDED / 'corpus.txt'}",
        f"data.tokenizer={LANDED / 'run' / 'tokenizer.json'}", "train.steps=9"]


def train(run: Path, cache: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(run)]
    for o in [*ARGS, f"data.cache_dir={cache}"]:
        args += ["-o", o]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=ENV)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))


@needs_avx2
def test_a_landed_run_directory_resumes_bit_for_bit_and_proves_itself(tmp_path):
    run = shutil.copytree(LANDED / "run", tmp_path / "run")
    old = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()]
    assert all("term" not in r for r in old)
    assert "term" not in json.loads((run / "checkpoints" / "step_00000006" / "manifest.json").read_text())

    done = train(run, tmp_path / "cache")  # 6 steps done; go on to 9
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "resumed"] == [6]
    new = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()][len(old):]
    assert [(r["kind"], r["step"], r["term"]) for r in new] == [("rewind", 6, 0), ("step", 7, 0), ("step", 8, 0),
                                                                 ("step", 9, 0)]
    report = SampleLedger(run / "ledger.jsonl").verify(0, events[0]["samples"])
    assert report.ok and (report.steps, report.ignored_stale) == (9, 0), report

    straight = tmp_path / "straight"
    assert train(straight, tmp_path / "cache").returncode == 0
    a, b = weights(straight), weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    check = subprocess.run([sys.executable, "-m", "tenacia", "report", "--check", str(run)], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "sample ledger: ok: 9 committed steps, 72 samples" in check.stdout


def test_the_landed_versions_config_loads_with_the_new_fields_at_their_defaults():
    from tenacia import config
    from tenacia.train.config import RunConfig

    # the corpus path it was written with lived on the machine that wrote it: point at the copy here
    cfg = config.load(RunConfig, LANDED / "run" / "config.toml", [f"data.corpus={LANDED / 'corpus.txt'}"])
    assert cfg.train.steps == 6 and cfg.train.batch_size == 8
    assert (cfg.replicas.lease, cfg.replicas.lease_ttl_s, cfg.replicas.sync, cfg.replicas.vote_checks) == \
        ("dir", 3, "ddp", [])  # the default; "every_step" names it too


REPLICA_RUN = Path(__file__).parent / "landed_replica_run"


@needs_avx2
def test_a_landed_replica_run_resumes_with_replicas_and_proves_itself(tmp_path):
    """Three replicas of the landed version trained 8 steps; two replicas of this version train on
    to 12: the run resumes at its checkpoint, the old records (no term) and the new ones (a newer
    term) verify together, and both replicas end equal."""
    run = shutil.copytree(REPLICA_RUN / "run", tmp_path / "run")
    args = [sys.executable, "-m", "tenacia", "train", "--replicas", "2", "--run-dir", str(run)]
    overrides = [o for o in ARGS if not o.startswith(("train.steps", "train.batch_size", "checkpoint."))]
    for o in [*overrides, "train.batch_size=12", "train.steps=12", "checkpoint.every=4", "checkpoint.keep=1",
              f"data.tokenizer={run / 'tokenizer.json'}", f"data.cache_dir={tmp_path / 'cache'}",
              "replicas.spares=0", "replicas.join_grace_s=5"]:
        args += ["-o", o]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, env=ENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    resumed = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in resumed if e["event"] == "resumed"] == [8]
    records = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    assert all("term" not in r for r in records[:9]) and all(r["term"] >= 2 for r in records[9:])
    check = subprocess.run([sys.executable, "-m", "tenacia", "report", "--check", str(run)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-2000:]
    assert "sample ledger: ok: 12 committed steps" in check.stdout and "2 fingerprint(s) equal" in check.stdout
