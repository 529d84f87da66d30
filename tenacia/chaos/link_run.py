"""``tenacia chaos link``: run a training command with its replicas on an emulated network.

Life cycle of ``LinkRun.run()``:
1. A ``LinkLab`` with the TUN forwarder (always: it holds the delay, loses packets and counts each
   node's bytes) and one namespace per node.
2. The command (``tenacia train --replicas N ...``) runs in the host's namespace with
   ``TENACIA_PLACEMENT`` naming a placement (``tenacia.train.replicas.placement``): replica i of
   the job runs in node i % nodes, with ``replicas.host`` set to the node's address and
   ``GLOO_SOCKET_IFNAME`` to its interface, so gloo, the replica protocol and healing all cross
   the emulated link. The run directory is shared through the filesystem.
3. Until the command exits, every ``POLL_S``: control lines appended to ``RUN_DIR/link-control.jsonl``
   (``tenacia chaos link-set``) and the run's ``[chaos]`` link entries (``link_schedule``) are
   applied and logged as ``link_changed`` in ``events.jsonl``; ``RUN_DIR/link.json`` says what is in
   force, which control lines were applied, and the bytes each node sent and received so far.
4. On the command's exit, on SIGINT or SIGTERM, and on any error: the command's session gets
   SIGTERM (its launcher stops its replicas cleanly) and SIGKILL after ``STOP_GRACE_S``; the
   final counters are written to ``link.json`` and printed; the lab is closed (every process in
   its namespaces, the forwarder, the namespaces and their devices). A SIGINT or SIGTERM during
   this clean-up is ignored, so it always runs whole.

The exit code is the command's; 128 + the signal when this process was interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ..events import EventLog, EventTail
from ..faults import LinkChange
from ..process import alive, die_with_parent
from ..storage import JsonlTail, append_jsonl, atomic_write_json, read_json
from ..train.replicas.placement import PLACEMENT_ENV, Place, Placement
from .link import LinkConfig, LinkLab
from .link_schedule import LinkAction, LinkSchedule

POLL_S = 0.1
COUNTERS_EVERY_S = 1.0
STOP_GRACE_S = 20.0  # the launcher's own grace to stop its replicas is shorter
CONTROL_FILE = "link-control.jsonl"
STATE_FILE = "link.json"


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def placement(lab: LinkLab) -> Placement:
    """Replica i in node i % nodes, reached at the node's address over its interface."""
    return Placement(tuple(Place(tuple(lab.exec_argv(n.index, [])), {"GLOO_SOCKET_IFNAME": n.ifname},
                                 (f"replicas.host={n.address}",)) for n in lab.nodes))


class LinkRun:
    def __init__(self, config: LinkConfig, command: list[str], run_dir: Path, first_id: int = 0,
                 replicas: int = 1, changes: list[LinkChange] | None = None):
        self.config, self.command, self.run_dir = config, command, Path(run_dir)
        self.first_id, self.replicas = first_id, replicas
        self.schedule = LinkSchedule(changes or [])
        self.state: dict[str, Any] = {}
        self.lab: LinkLab | None = None
        self.child: subprocess.Popen | None = None
        self.events: EventLog | None = None

    # ----- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        """Run the command on the lab; its exit code (module docstring)."""
        handlers = {s: signal.signal(s, self._interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        code = None
        try:
            with tempfile.TemporaryDirectory(prefix="tenacia-link-") as tmp, LinkLab(self.config) as lab:
                self.lab = lab
                try:
                    code = self._run(lab, Path(tmp))
                except Interrupted as stop:
                    code = 128 + stop.signum
                finally:
                    for s in handlers:
                        signal.signal(s, signal.SIG_IGN)
                    self._stop_child()
                    self._finish(code)
        except Interrupted as stop:  # while the lab was being built: LinkLab removed what it made
            code = 128 + stop.signum
        finally:
            self.lab = None
            for s, previous in handlers.items():
                signal.signal(s, previous)
        return code

    def _interrupt(self, signum: int, frame: object) -> None:
        raise Interrupted(signum)

    def _run(self, lab: LinkLab, tmp: Path) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        control = self.run_dir / CONTROL_FILE
        control.unlink(missing_ok=True)
        path = tmp / "placement.json"
        placement(lab).write(path)
        cfg = self.config
        self.state = {
            "pid": os.getpid(), "forwarder_pid": lab.forwarder.pid, "started": time.time(), "command": self.command,
            "finished": False,
            "delay_ms": cfg.delay_ms, "rate_mbit": cfg.rate_mbit, "loss": cfg.loss, "seed": cfg.seed,
            "nodes": [{"node": n.index, "address": n.address, "netns": n.netns,
                       "replicas": [self.first_id + i for i in range(self.replicas) if i % cfg.nodes == n.index]}
                      for n in lab.nodes],
            "partitioned": [], "applied": [], "bytes": None}
        self._write()
        events_path = self.run_dir / "events.jsonl"
        tail = EventTail(events_path, from_end=True)
        self.events = EventLog(events_path, "link")
        requests = JsonlTail(control)
        self.child = subprocess.Popen(self.command, env={**os.environ, PLACEMENT_ENV: str(path)},
                                      start_new_session=True, preexec_fn=die_with_parent)
        step, counted = 0, time.monotonic()
        while True:
            code = self.child.poll()
            if code is not None:
                return code
            for e in tail.new():
                if e.get("event") == "step_committed" and e.get("step"):
                    step = max(step, int(e["step"]))
            now = time.monotonic()
            for action in self.schedule.due(step, now):
                self.apply(action, step, "schedule")
            for request in requests.new():
                self.request(request, step)
            if now - counted >= COUNTERS_EVERY_S:
                self.state["bytes"], counted = self.counters(), now
                self._write()
            time.sleep(POLL_S)

    # ----- changes ------------------------------------------------------------------------------
    def request(self, request: dict[str, Any], step: int) -> None:
        """One control line of ``tenacia chaos link-set``: the changes it asks for, then its id
        recorded as applied."""
        for what in ("delay_ms", "rate_mbit", "loss"):
            if request.get(what) is not None:
                self.apply(LinkAction(what, value=float(request[what])), step, "link-set")
        if request.get("partition") is not None:
            node, seconds = request["partition"]
            self.apply(self.schedule.partition(int(node), float(seconds), time.monotonic(), "link-set"), step,
                       "link-set")
        self.state["applied"] = [*self.state["applied"], request.get("id")][-50:]
        self._write()

    def apply(self, action: LinkAction, step: int, by: str) -> None:
        lab = self.lab
        if action.what == "delay_ms":
            lab.set_delay(action.value)
        elif action.what == "rate_mbit":
            lab.set_rate(action.value)
        elif action.what == "loss":
            lab.set_loss(action.value)
        elif action.what == "disconnect":
            lab.disconnect(action.node)
            self.state["partitioned"] = sorted({*self.state["partitioned"], action.node})
        else:
            lab.reconnect(action.node)
            self.state["partitioned"] = sorted(set(self.state["partitioned"]) - {action.node})
        if action.value is not None:
            self.state[action.what] = action.value
        self.events.emit("link_changed", step=step or None, change=action.what, value=action.value,
                         node=action.node, by=by, spec=action.spec or None)
        self._write()

    # ----- bytes and the end --------------------------------------------------------------------
    def counters(self) -> list[dict[str, Any]]:
        return [{"node": n.index, "address": n.address, **c}
                for n, c in zip(self.lab.nodes, self.lab.counters(), strict=True)]

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        for sig in (signal.SIGCONT, signal.SIGTERM):
            _signal_group(child.pid, sig)
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(child.pid, signal.SIGKILL)
            child.wait(timeout=10)

    def _finish(self, code: int | None) -> None:
        if not self.state:
            return
        try:
            self.state["bytes"] = self.counters()
        except Exception as e:  # noqa: BLE001 - the last counters are lost, the clean-up goes on
            self.state["bytes_error"] = f"{type(e).__name__}: {e}"
        self.state.update(finished=True, exit_code=code, ended=time.time())
        self._write()
        print(format_bytes(self.state))

    def _write(self) -> None:
        atomic_write_json(self.run_dir / STATE_FILE, self.state, indent=1)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def format_bytes(state: dict[str, Any]) -> str:
    """The bytes table of ``link.json``'s state, one line per node."""
    rows = [f"tenacia chaos link: bytes counted at the forwarder (delay {state['delay_ms']:g} ms one way, "
            f"rate {state['rate_mbit']:g} Mbit/s, loss {state['loss']:g})"]
    replicas = {n["node"]: n["replicas"] for n in state["nodes"]}
    for c in state.get("bytes") or []:
        who = ",".join(map(str, replicas[c["node"]])) or "-"
        rows.append(f"  node {c['node']} ({c['address']}, replicas {who}): sent {c['sent_bytes']:,} B "
                    f"in {c['sent_packets']:,} packets, received {c['received_bytes']:,} B, "
                    f"lost {c['lost_packets']:,} packets")
    return "\n".join(rows)


def link_set(run_dir: Path, changes: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Ask the ``tenacia chaos link`` running ``run_dir`` for ``changes`` (``delay_ms``,
    ``rate_mbit``, ``loss``, ``partition``: [node, seconds]); returns ``link.json`` once applied.
    Raises ``RuntimeError`` when no link runs there or it does not apply them within ``timeout``."""
    state = read_json(Path(run_dir) / STATE_FILE)
    if not isinstance(state, dict) or state.get("finished") or not alive(state.get("pid")):
        raise RuntimeError(f"no 'tenacia chaos link' is running {run_dir} (see {Path(run_dir) / STATE_FILE})")
    request_id = uuid.uuid4().hex
    append_jsonl(Path(run_dir) / CONTROL_FILE, {"id": request_id, **changes})
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = read_json(Path(run_dir) / STATE_FILE)
        if isinstance(state, dict) and request_id in state.get("applied", []):
            return state
        time.sleep(0.05)
    raise RuntimeError(f"the link running {run_dir} did not apply {changes} within {timeout:g}s")
