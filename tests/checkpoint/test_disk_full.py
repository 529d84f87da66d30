"""A checkpoint directory whose disk fills up: a real tmpfs smaller than two checkpoints. The save
that does not fit is removed, named once (event and warning), training is not interrupted, and
the checkpoint already on that disk still verifies."""

import logging
import shutil

import pytest

from tenacia import checkpoint as ckpt
from tenacia.events import EventLog, read_events
from tests.tmpfs import small_tmpfs

from .test_checkpoint import make_state


@pytest.fixture
def small_disk(tmp_path):
    """``tmp_path/checkpoints`` on a 2.4 MB tmpfs (one micro-model checkpoint is about 1.6 MB)."""
    with small_tmpfs(tmp_path / "checkpoints", "2400k") as root:
        yield root


def test_a_save_that_does_not_fit_is_removed_named_once_and_training_goes_on(tmp_path, small_disk, caplog):
    model, opt = make_state()
    events = EventLog(tmp_path / "events.jsonl", "trainer")
    writer = ckpt.CheckpointWriter(small_disk, keep=3, background=True, events=events)
    writer.save(ckpt.take_snapshot(1, model, opt, "cpu", {"sampler": {"position": 1}}))
    writer.wait()
    first = writer.last_path
    with caplog.at_level(logging.WARNING):
        writer.save(ckpt.take_snapshot(2, model, opt, "cpu", {"sampler": {"position": 2}}))
        writer.wait()  # no error reaches the training thread
    failed = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "checkpoint_failed"]
    assert len(failed) == 1 and failed[0]["step"] == 2 and failed[0]["errno"] == "ENOSPC"
    assert "No space left on device" in failed[0]["error"]
    assert sum("checkpoint of step 2 not saved" in r.message for r in caplog.records) == 1
    assert sorted(p.name for p in small_disk.iterdir()) == [first.name]  # no debris
    ckpt.verify(first)
    assert writer.last_path == first and writer.failures == 1
    # every interval tries again: named again while there is no room, saved once there is
    writer.save(ckpt.take_snapshot(3, model, opt, "cpu", {"sampler": {"position": 3}}))
    writer.wait()
    assert writer.failures == 2  # still no room for two: named again, for step 3
    for path in small_disk.iterdir():
        shutil.rmtree(path)
    writer.save(ckpt.take_snapshot(4, model, opt, "cpu", {"sampler": {"position": 4}}))
    writer.wait()
    assert writer.last_path.name == "step_00000004" and writer.failures == 2
