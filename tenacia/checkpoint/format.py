"""The on-disk format of a checkpoint: writing one crash-safely, verifying it, finding the newest.

Layout of ``<run_dir>/checkpoints/step_00000100/``:
- ``model.safetensors``: parameters by tenacia name; a tied output weight is stored once, as
  ``tok_embeddings.weight``.
- ``optimizer.safetensors``: AdamW moments as ``<param>.exp_avg``, ``<param>.exp_avg_sq``,
  ``<param>.step``.
- ``state.safetensors``: RNG states (``rng.cpu`` and, on accelerators, ``rng.accelerator``).
- ``manifest.json``: ``format`` (``FORMAT``), step, ``term`` (the leader term that saved it: 0 for
  a single process; a manifest without it, written before it was recorded, reads as 0), the
  resolved config, sampler state, trainer counters, and the SHA-256 and size of every other file.
  Written last.

Contract:
- A checkpoint directory named ``step_*`` is complete: it is built as a temporary sibling and
  published by ``tenacia.storage.atomic_directory`` (every file fsynced, the manifest last, then
  the rename and the parent's fsync). A crash at any point leaves either the previous
  checkpoints untouched or the new one whole; a leftover temporary directory is removed at the
  next save.
- ``latest_verified`` returns the newest checkpoint whose manifest parses, whose format this
  version reads, and whose files all match their SHA-256; a truncated or corrupt one is skipped
  with a warning naming it, never loaded. A manifest of another format version is refused with
  an error naming both versions; when no checkpoint is left, that error is raised (starting over
  would write a new run over one of another version).
- Terms (the fence, ``tenacia.data.ledger``): given the sample ledger's ``terms()``,
  ``latest_verified`` also skips a checkpoint of step S saved under a term older than the ledger's
  at S (a deposed leader saved it). ``write_snapshot`` never replaces a checkpoint of the same step
  saved under a newer term: it raises ``Superseded`` and leaves it in place.
- No pickle anywhere: tensors go to safetensors, everything else to JSON.
- The kill points ``checkpoint:<file>`` and ``checkpoint:renamed`` (``tenacia.hooks``) are
  reached as each file is written and once the directory is in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import hooks
from ..events import EventLog
from ..storage import atomic_directory

FORMAT = "tenacia-checkpoint/1"
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Snapshot:
    """Host-memory copy of everything a checkpoint holds."""

    step: int
    files: dict[str, dict[str, torch.Tensor]]  # file name -> tensors
    meta: dict[str, Any]  # goes into the manifest


class CorruptCheckpoint(ValueError):
    """A checkpoint that does not verify. The message names the directory and what is wrong."""


class ForeignFormat(CorruptCheckpoint):
    """A checkpoint of another format version: whole, maybe, but not readable by this version."""


class Superseded(Exception):
    """A save refused: a checkpoint of the same step was saved under a newer leader term."""


def manifest_term(manifest: dict[str, Any]) -> int:
    """The leader term that saved a checkpoint (0 when its manifest predates terms)."""
    term = manifest.get("term", 0)
    return term if isinstance(term, int) and not isinstance(term, bool) and term >= 0 else 0


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def write_snapshot(root: Path, snap: Snapshot) -> Path:
    """Write a snapshot crash-safely (see module contract). Returns the final directory. A
    checkpoint of the same step from an earlier, discarded timeline is replaced, unless it was
    saved under a newer term (``Superseded``)."""
    final = root / step_dir_name(snap.step)
    term = manifest_term(snap.meta)
    if final.is_dir():
        try:
            existing = manifest_term(read_manifest(final))
        except CorruptCheckpoint:
            existing = -1  # whatever is there, it is no checkpoint to keep
        if existing > term:
            raise Superseded(f"checkpoint {final} was saved under term {existing}; not replaced by one of "
                             f"term {term}, whose leader was deposed")
    with atomic_directory(final) as build:
        files = {}
        for name, tensors in snap.files.items():
            data = st_save(tensors, metadata={"format": FORMAT})
            (build.tmp / name).write_bytes(data)
            files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            hooks.reach(f"checkpoint:{name}", snap.step)
        manifest = dict(snap.meta, format=FORMAT, created=time.time(), files=files)
        (build.tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
        hooks.reach("checkpoint:manifest.json", snap.step)
    hooks.reach("checkpoint:renamed", snap.step)
    return final


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise CorruptCheckpoint(f"checkpoint {path}: manifest.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCheckpoint(f"checkpoint {path}: manifest.json is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise ForeignFormat(f"checkpoint {path}: format {manifest.get('format')!r}, this version of "
                                f"tenacia reads {FORMAT!r}; resume or serve it with the tenacia that wrote it")
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


def latest_verified(root: Path, events: EventLog | None = None,
                    term_at: Callable[[int], int] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies, skipping (with a warning) every one that does not, and
    with ``term_at`` (step -> the sample ledger's term at that step) every one a deposed leader
    saved. None when there is none; ``ForeignFormat`` when there is none but one of another
    format version."""
    foreign: ForeignFormat | None = None
    for path in list_checkpoints(root):
        try:
            manifest = verify(path)
            step, term = int(manifest["step"]), manifest_term(manifest)
            if term_at is not None and term < term_at(step):
                raise CorruptCheckpoint(f"checkpoint {path}: saved under term {term}, but the sample ledger "
                                        f"holds records of term {term_at(step)} up to step {step}: its "
                                        "leader was deposed")
            return path, manifest
        except CorruptCheckpoint as e:
            if isinstance(e, ForeignFormat):
                foreign = foreign or e
            log.warning("skipping checkpoint: %s", e)
            if events is not None:
                events.emit("checkpoint_skipped", path=str(path), reason=str(e))
    if foreign is not None:
        raise foreign
    return None


def load_file(path: Path, name: str) -> dict[str, torch.Tensor]:
    return st_load((path / name).read_bytes())
