"""Saving checkpoints without stopping training, and keeping the newest few.

Contract: ``CheckpointWriter.save`` stalls the caller only for the in-memory ``Snapshot`` it is
given; the files are written by a background thread (``format.write_snapshot``). At most one save
is in flight: a second waits. An error in the background write is raised in the training thread
at the next ``save`` or ``wait``. A save refused because a newer leader term saved the same step
(``format.Superseded``) is no error: it is logged as ``checkpoint_skipped`` and the newer one kept.

Storage failures are not training failures: when writing a checkpoint fails with an ``OSError``
(the disk or quota is full, an I/O error, a read-only filesystem), what was written of it is
removed, the error is logged once as ``checkpoint_failed`` (step, path, errno name, message) and
as a warning, training goes on, and the next interval tries again. Checkpoints already published
are never touched by a failed save; ``last_path`` stays the newest good one.

Pruning, after each save: the newest ``keep`` checkpoints that verify are kept, and every older
``step_*`` directory is removed; a corrupt one among the newest is removed too (resume skips it
anyway), logged as ``checkpoint_removed`` with the reason. A corrupt checkpoint therefore never
takes the place of a verified one. A checkpoint of another format version is left alone, and not
counted. Each checkpoint is verified (SHA-256 of every file) once per writer; the one the writer
has just written counts as verified (its hashes were taken from the bytes written, and the
directory was fsynced).
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from pathlib import Path

from ..events import EventLog
from ..storage import remove_stale_temporaries
from .config import CheckpointConfig  # noqa: F401  (its home before config.py)
from .format import (
    CorruptCheckpoint,
    ForeignFormat,
    Snapshot,
    Superseded,
    list_checkpoints,
    read_manifest,
    verify,
    write_snapshot,
)

log = logging.getLogger(__name__)


class CheckpointWriter:
    """Saves snapshots in a background thread and keeps the newest ``keep`` checkpoints."""

    def __init__(self, root: Path, keep: int, background: bool = True, events: EventLog | None = None):
        self.root, self.keep, self.background, self.events = root, keep, background, events
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_path: Path | None = None
        self._verified: set[Path] = set()  # checkpoints this writer wrote or verified
        self.failures = 0  # saves the storage refused (checkpoint_failed)

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
            try:
                path = write_snapshot(self.root, snap)
            except OSError as e:
                self._failed(snap.step, e)
                return
            self._verified.add(path)
            self._prune()
        except Superseded as e:
            if self.events is not None:
                self.events.emit("checkpoint_skipped", step=snap.step, path=str(self.root), reason=str(e))
            return
        except BaseException as e:  # reported to the training thread at the next wait()
            self._error = e
            return
        self.last_path = path
        if self.events is not None:
            size = sum(f.stat().st_size for f in path.iterdir())
            self.events.emit("checkpoint_saved", step=snap.step, path=str(path),
                             seconds=round(time.perf_counter() - t0, 4), bytes=size)

    def _failed(self, step: int, e: OSError) -> None:
        """A save the storage refused (module docstring): no debris, named once, training goes on."""
        remove_stale_temporaries(self.root)
        self.failures += 1
        name = errno.errorcode.get(e.errno, "") if e.errno else ""
        message = f"checkpoint of step {step} not saved in {self.root}: {name + ': ' if name else ''}{e.strerror or e}"
        log.warning("%s; training goes on, the next checkpoint interval tries again", message)
        if self.events is not None:
            self.events.emit("checkpoint_failed", step=step, path=str(self.root), errno=name or None,
                             error=message)

    def _prune(self) -> None:
        kept = 0
        for path in list_checkpoints(self.root):
            try:
                if kept < self.keep:
                    self._verify(path)
                    kept += 1
                    continue
                read_manifest(path)  # only to leave another version's checkpoints alone
            except ForeignFormat:
                continue
            except CorruptCheckpoint as e:
                if kept < self.keep and self.events is not None:
                    self.events.emit("checkpoint_removed", path=str(path), reason=str(e))
            shutil.rmtree(path, ignore_errors=True)
            self._verified.discard(path)
        remove_stale_temporaries(self.root)

    def _verify(self, path: Path) -> None:
        if path not in self._verified:
            verify(path)
            self._verified.add(path)

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
