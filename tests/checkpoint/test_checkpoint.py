"""Checkpoint files: crash-safe layout, verification, skipping corrupt ones, keep-K, no pickle."""

import json
import logging

import pytest
import torch

from tenacia import checkpoint as ckpt
from tenacia.device import detect
from tenacia.events import EventLog, read_events
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig
from tenacia.train.step import build_optimizer, train_step


def make_state(seed=0):
    torch.manual_seed(seed)
    model = Llama(ModelConfig(preset="micro"))
    dev = detect("cpu")
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, device=dev)
    batch = torch.randint(0, 512, (4, 17))
    train_step(model, opt, batch, step=1, lr=1e-3, grad_clip=1.0, micro_batch_size=2, device=dev)
    return model, opt


def save(root, step, model, opt, background=False, keep=3, events=None):
    w = ckpt.CheckpointWriter(root, keep=keep, background=background, events=events)
    w.save(ckpt.take_snapshot(step, model, opt, "cpu", {"sampler": {"position": step}}))
    w.wait()
    return w.last_path


def test_roundtrip_is_exact_and_tied_weight_stored_once(tmp_path):
    model, opt = make_state()
    path = save(tmp_path, 5, model, opt, background=True)
    assert path.name == "step_00000005"
    tensors = ckpt.load_file(path, "model.safetensors")
    assert "tok_embeddings.weight" in tensors and "output.weight" not in tensors
    model2, opt2 = make_state(seed=1)
    ckpt.load_model_weights(model2, path)
    ckpt.load_optimizer_tensors(model2, opt2, ckpt.load_file(path, "optimizer.safetensors"))
    for (n, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    assert model2.output.weight.data_ptr() == model2.tok_embeddings.weight.data_ptr()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][k], opt2.state[q][k])
    manifest = ckpt.verify(path)
    assert manifest["step"] == 5 and set(manifest["files"]) == {
        "model.safetensors", "optimizer.safetensors", "state.safetensors"}


def test_no_pickle_in_checkpoint(tmp_path):
    model, opt = make_state()
    path = save(tmp_path, 1, model, opt)
    for f in path.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x02" and b"PK" != head, f"{f.name} looks like a pickle/zip"
    json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_manifest", "garble_manifest", "delete_file"])
def test_corrupt_checkpoint_is_skipped_with_warning(tmp_path, caplog, damage):
    model, opt = make_state()
    save(tmp_path, 1, model, opt)
    newest = save(tmp_path, 2, model, opt)
    target = newest / "model.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "delete_manifest":
        (newest / "manifest.json").unlink()
    elif damage == "garble_manifest":
        (newest / "manifest.json").write_text("{not json")
    else:
        target.unlink()
    events = EventLog(tmp_path / "events.jsonl", "test")
    with caplog.at_level(logging.WARNING):
        found = ckpt.latest_verified(tmp_path, events)
    assert found is not None and found[0].name == "step_00000001"
    assert "step_00000002" in caplog.text
    skipped = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "checkpoint_skipped"]
    assert len(skipped) == 1 and "step_00000002" in skipped[0]["path"]
    with pytest.raises(ckpt.CorruptCheckpoint, match="step_00000002"):
        ckpt.verify(newest)


def test_keep_last_k_and_leftover_tmp_removed(tmp_path):
    model, opt = make_state()
    (tmp_path / ".tmp-step_00000009-999999").mkdir(parents=True)
    for step in range(1, 6):
        save(tmp_path, step, model, opt, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000005", "step_00000004"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_save_stalls_only_for_the_memory_copy(tmp_path, monkeypatch):
    """The caller returns while the files are still being written by the background thread: the
    write is held until after save() returned, so save() cannot have waited for it."""
    import threading

    from tenacia.checkpoint import writer

    model, opt = make_state()
    gate = threading.Event()
    real = writer.write_snapshot

    def held_write(root, snap):
        assert gate.wait(60), "save() did not return while its write was held"
        return real(root, snap)

    monkeypatch.setattr(writer, "write_snapshot", held_write)
    w = ckpt.CheckpointWriter(tmp_path, keep=3, background=True)
    snap = ckpt.take_snapshot(1, model, opt, "cpu", {})
    w.save(snap)
    with torch.no_grad():  # training goes on and changes the weights: the snapshot must not see it
        model.tok_embeddings.weight.add_(1.0)
    assert not ckpt.list_checkpoints(tmp_path)
    gate.set()
    w.wait()
    saved = ckpt.load_file(w.last_path, "model.safetensors")["tok_embeddings.weight"]
    assert torch.equal(saved + 1.0, model.tok_embeddings.weight)


def test_pruning_keeps_verified_checkpoints_not_corrupt_ones(tmp_path):
    """keep=2 with the newest checkpoint corrupt: the next save keeps itself and the newest one
    that verifies, and removes the corrupt one (logged), instead of keeping the corrupt one and
    deleting the verified one."""
    model, opt = make_state()
    for step in (1, 2):
        save(tmp_path, step, model, opt, keep=2)
    target = tmp_path / "step_00000002" / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    events = EventLog(tmp_path / "events.jsonl", "test")
    save(tmp_path, 3, model, opt, keep=2, events=events)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000001"]
    assert all(ckpt.verify(p) for p in ckpt.list_checkpoints(tmp_path))
    removed = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "checkpoint_removed"]
    assert [e["path"].rsplit("/", 1)[1] for e in removed] == ["step_00000002"] and "SHA-256" in removed[0]["reason"]


def test_pruning_leaves_another_format_version_alone(tmp_path):
    model, opt = make_state()
    old = save(tmp_path, 1, model, opt, keep=1)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps(dict(manifest, format="tenacia-checkpoint/0")))
    for step in (2, 3):
        save(tmp_path, step, model, opt, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000001"]
