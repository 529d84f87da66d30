"""Checkpoint manifests carry the leader term that saved them: resume skips one a deposed leader
saved, a deposed leader's save never replaces a newer term's, a manifest written before terms
loads as term 0, and one of another format version is refused with an error naming both."""

import json

import pytest

from tenacia import checkpoint as ckpt
from tenacia.events import EventLog, read_events

from .test_checkpoint import make_state


@pytest.fixture(scope="module")
def state():
    return make_state()


def save(root, step, state, term=None, events=None):
    meta = {"sampler": {"position": step}} if term is None else {"sampler": {"position": step}, "term": term}
    writer = ckpt.CheckpointWriter(root, keep=5, background=False, events=events)
    writer.save(ckpt.take_snapshot(step, *state, "cpu", meta))
    writer.wait()
    return root / f"step_{step:08d}"


def test_a_manifest_without_a_term_loads_as_term_0(tmp_path, state):
    path = save(tmp_path, 3, state)
    manifest = json.loads((path / "manifest.json").read_text())
    assert "term" not in manifest  # as the landed version wrote it
    found = ckpt.latest_verified(tmp_path, term_at=lambda step: 0)
    assert found is not None and found[0] == path and ckpt.manifest_term(found[1]) == 0
    ckpt.load_model_weights(make_state(seed=1)[0], path)


def test_resume_skips_a_checkpoint_a_deposed_leader_saved(tmp_path, state):
    save(tmp_path, 2, state, term=1)
    save(tmp_path, 4, state, term=1)  # term 2 took over at step 3: the ledger's step 4 is term 2's
    events = EventLog(tmp_path / "events.jsonl", "test")
    found = ckpt.latest_verified(tmp_path, events, term_at=lambda step: 1 if step < 3 else 2)
    assert found is not None and found[0].name == "step_00000002"
    skipped = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "checkpoint_skipped"]
    assert len(skipped) == 1 and "step_00000004" in skipped[0]["path"] and "term 1" in skipped[0]["reason"]
    # without the ledger's terms (serving a run), the newest checkpoint is used as before
    assert ckpt.latest_verified(tmp_path)[0].name == "step_00000004"


def test_a_deposed_leaders_save_does_not_replace_a_newer_terms(tmp_path, state):
    newer = save(tmp_path, 4, state, term=3)
    created = json.loads((newer / "manifest.json").read_text())["created"]
    events = EventLog(tmp_path / "events.jsonl", "test")
    save(tmp_path, 4, state, term=2, events=events)  # no error in the training thread
    manifest = json.loads((newer / "manifest.json").read_text())
    assert (manifest["term"], manifest["created"]) == (3, created)
    skipped = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "checkpoint_skipped"]
    assert len(skipped) == 1 and "term 3" in skipped[0]["reason"]
    # the same step saved again under the same or a newer term replaces it, as before
    save(tmp_path, 4, state, term=3)
    assert json.loads((newer / "manifest.json").read_text())["created"] > created


def test_another_format_version_is_refused_naming_both_versions(tmp_path, state):
    path = save(tmp_path, 5, state, term=1)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(dict(manifest, format="tenacia-checkpoint/9")))
    with pytest.raises(ckpt.ForeignFormat, match="'tenacia-checkpoint/9'.*'tenacia-checkpoint/1'"):
        ckpt.verify(path)
    # the only checkpoint: resume refuses rather than start over on top of it
    with pytest.raises(ckpt.ForeignFormat, match="tenacia-checkpoint/9"):
        ckpt.latest_verified(tmp_path)
    # with one this version reads, that one is used
    save(tmp_path, 2, state, term=1)
    assert ckpt.latest_verified(tmp_path)[0].name == "step_00000002"
