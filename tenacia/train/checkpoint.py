"""Checkpoints that survive any crash.

Layout of ``<run_dir>/checkpoints/step_00000100/``:
- ``model.safetensors``: parameters by tenacia name; a tied output weight is stored once, as
  ``tok_embeddings.weight``.
- ``optimizer.safetensors``: AdamW moments as ``<param>.exp_avg``, ``<param>.exp_avg_sq``,
  ``<param>.step``.
- ``state.safetensors``: RNG states (``rng.cpu`` and, on accelerators, ``rng.accelerator``).
- ``manifest.json``: format, step, the resolved config, sampler state, trainer counters, and the
  SHA-256 and size of every other file. Written last.

Contract:
- A checkpoint directory named ``step_*`` is complete: files are written into a temporary
  sibling, each fsynced, the manifest last, then the directory is renamed into place and the
  parent fsynced. A crash at any point leaves either the previous checkpoints untouched or the new
  one whole; a leftover temporary directory is removed at the next save or resume.
- ``latest_verified`` returns the newest checkpoint whose manifest parses and whose files all
  match their SHA-256; a truncated or corrupt one is skipped with a warning naming it, never loaded.
- ``CheckpointWriter.save`` stalls the caller only for a copy of the state into host memory; the
  files are written by a background thread. At most one save is in flight: a second waits.
- No pickle anywhere: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..chaos import killpoints
from ..events import EventLog

FORMAT = "tenacia-checkpoint/1"
log = logging.getLogger(__name__)


class CorruptCheckpoint(ValueError):
    """A checkpoint that does not verify. The message names the directory and what is wrong."""


@dataclass(slots=True)
class Snapshot:
    """Host-memory copy of everything a checkpoint holds."""

    step: int
    files: dict[str, dict[str, torch.Tensor]]  # file name -> tensors
    meta: dict[str, Any]  # goes into the manifest


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers, each shared tensor once (under its first name)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict(keep_vars=False).items():
        key = t.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value):
                out[f"{names[id(p)]}.{key}"] = value
    return out


def state_fingerprint(step: int, sampler_state: dict[str, Any], model: torch.nn.Module,
                      optimizer: torch.optim.Optimizer) -> str:
    """SHA-256 over weights, AdamW moments, step and sampler position: equal iff replicas agree."""
    h = hashlib.sha256(json.dumps([step, sampler_state]).encode())
    for tensors in (model_tensors(model), optimizer_tensors(model, optimizer)):
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           tensors: dict[str, torch.Tensor]) -> None:
    """Restore optimizer state from ``optimizer_tensors`` output (exact, bit for bit)."""
    params = dict(model.named_parameters())
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, field = key.rpartition(".")
        if name not in params:
            raise CorruptCheckpoint(f"optimizer state for unknown parameter '{name}'")
        state.setdefault(name, {})[field] = value
    optimizer.state.clear()
    for name, fields in state.items():
        p = params[name]
        optimizer.state[p] = {
            k: (v.to(p.device) if k != "step" else v.clone()) for k, v in fields.items()
        }


def rng_tensors(device_type: str) -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if device_type != "cpu" and hasattr(torch, "accelerator"):
        module = getattr(torch, device_type, None)
        if module is not None and hasattr(module, "get_rng_state"):
            out["rng.accelerator"] = module.get_rng_state()
    return out


def restore_rng(tensors: dict[str, torch.Tensor], device_type: str) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.accelerator" in tensors:
        getattr(torch, device_type).set_rng_state(tensors["rng.accelerator"])


def take_snapshot(step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  device_type: str, meta: dict[str, Any]) -> Snapshot:
    """Copy the state to host memory: the only part of a save the training loop waits for."""

    def host(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}

    files = {
        "model.safetensors": host(model_tensors(model)),
        "optimizer.safetensors": host(optimizer_tensors(model, optimizer)),
        "state.safetensors": host(rng_tensors(device_type)),
    }
    return Snapshot(step, files, dict(meta, step=step))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def write_snapshot(root: Path, snap: Snapshot) -> Path:
    """Write a snapshot crash-safely (see module contract). Returns the final directory."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(snap.step)
    tmp = root / f".tmp-{step_dir_name(snap.step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = {}
    for name, tensors in snap.files.items():
        data = st_save(tensors, metadata={"format": FORMAT})
        _write_file(tmp / name, data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        killpoints.hit(f"checkpoint:{name}", snap.step)
    manifest = dict(snap.meta, format=FORMAT, created=time.time(), files=files)
    _write_file(tmp / "manifest.json", json.dumps(manifest, indent=1, default=str).encode())
    killpoints.hit("checkpoint:manifest.json", snap.step)
    _fsync_dir(tmp)
    if final.exists():  # a checkpoint of the same step from an earlier, discarded timeline
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    killpoints.hit("checkpoint:renamed", snap.step)
    return final


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise CorruptCheckpoint(f"checkpoint {path}: manifest.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCheckpoint(f"checkpoint {path}: manifest.json is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise CorruptCheckpoint(f"checkpoint {path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def verify(path: Path) -> dict[str, Any]:
    """Check every file against the manifest; return the manifest or raise CorruptCheckpoint."""
    manifest = read_manifest(path)
    for name, info in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise CorruptCheckpoint(f"checkpoint {path}: {name} is missing")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise CorruptCheckpoint(f"checkpoint {path}: {name} has {size} bytes, manifest says {info['bytes']} (truncated?)")
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest != info["sha256"]:
            raise CorruptCheckpoint(f"checkpoint {path}: {name} does not match its SHA-256 (corrupt)")
    return manifest


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories, newest step first."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]), reverse=True)


def latest_verified(root: Path, events: EventLog | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies, skipping (with a warning) every one that does not."""
    for path in list_checkpoints(root):
        try:
            return path, verify(path)
        except CorruptCheckpoint as e:
            log.warning("skipping checkpoint: %s", e)
            if events is not None:
                events.emit("checkpoint_skipped", path=str(path), reason=str(e))
    return None


def load_file(path: Path, name: str) -> dict[str, torch.Tensor]:
    return st_load((path / name).read_bytes())


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` into ``model`` (tied weights re-tie by sharing storage)."""
    tensors = load_file(path, "model.safetensors")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {n for n in missing if getattr(getattr(model, "cfg", None), "tie_embeddings", False) and n == "output.weight"}
    if set(missing) - tied or unexpected:
        raise CorruptCheckpoint(
            f"checkpoint {path}: weights do not fit the model (missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)})"
        )


class CheckpointWriter:
    """Saves snapshots in a background thread and keeps the newest ``keep`` checkpoints."""

    def __init__(self, root: Path, keep: int, background: bool = True, events: EventLog | None = None):
        self.root, self.keep, self.background, self.events = root, keep, background, events
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_path: Path | None = None

    def save(self, snap: Snapshot) -> None:
        self.wait()
        if self.background:
            self._thread = threading.Thread(target=self._write, args=(snap,), name="checkpoint-writer", daemon=True)
            self._thread.start()
        else:
            self._write(snap)
            self._raise()

    def _write(self, snap: Snapshot) -> None:
        t0 = time.perf_counter()
        try:
            path = write_snapshot(self.root, snap)
            self._prune()
        except BaseException as e:  # reported to the training thread at the next wait()
            self._error = e
            return
        self.last_path = path
        if self.events is not None:
            size = sum(f.stat().st_size for f in path.iterdir())
            self.events.emit("checkpoint_saved", step=snap.step, path=str(path),
                             seconds=round(time.perf_counter() - t0, 4), bytes=size)

    def _prune(self) -> None:
        for old in list_checkpoints(self.root)[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.root.glob(".tmp-*"):
            if not tmp.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(tmp, ignore_errors=True)

    def wait(self) -> None:
        """Block until the save in flight is on disk; re-raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"checkpoint write failed: {err}") from err


def load_run_for_inference(run_dir: str | Path, device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32):
    """The newest verified checkpoint of a tenacia run as an eval-mode model.

    Returns ``(model, model_config, tokenizer_json_path)``. Only the ``[model]`` section of the
    run's config.toml is read, so a run directory copied to another machine (without its corpus)
    still serves. Raises ``CorruptCheckpoint`` naming the run directory when it holds no checkpoint
    that verifies.
    """
    import tomllib

    from .. import config as cfglib
    from ..model.llama import Llama, ModelConfig

    run = Path(run_dir)
    if not (run / "config.toml").is_file():
        raise CorruptCheckpoint(f"{run} is not a tenacia run directory: config.toml is missing")
    cfg = cfglib.from_dict(ModelConfig, tomllib.loads((run / "config.toml").read_text()).get("model", {}),
                           prefix="model")
    found = latest_verified(run / "checkpoints")
    if found is None:
        raise CorruptCheckpoint(f"run {run} has no checkpoint that verifies under {run / 'checkpoints'}")
    model = Llama(cfg, init_weights=False)
    load_model_weights(model, found[0])
    model.to(device=device or "cpu", dtype=dtype).eval()
    return model, cfg, run / "tokenizer.json"
