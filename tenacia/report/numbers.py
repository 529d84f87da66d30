"""Wrong numbers in a run's event log: what was injected, what triggered a re-execution, each
verdict, and the devices evicted by name (``tenacia report``; the rules are ``train/numerics/judge.py``).

``numbers(events)`` gives one JSON-ready dict: ``injected`` (``fault_injected`` of kind ``sdc`` or
``lr_spike``), ``triggers`` (``numeric_trigger``), ``verdicts`` (``numeric_verdict``, by kind in
``verdict_counts``), ``evicted`` (``replica_evicted``, with the device named) and ``banned``
(``device_banned``: the slot the launcher never reuses, and the replacement's).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

NUMERIC_KINDS = ("sdc", "lr_spike")


def is_numeric(event: dict[str, Any]) -> bool:
    """An injection of wrong numbers (not a process fault: no stall or healing to measure)."""
    return event["event"] == "fault_injected" and event.get("kind") in NUMERIC_KINDS


def numbers(events: list[dict[str, Any]]) -> dict[str, Any]:
    keep = ("step", "replica", "kind", "spec", "site", "bits", "when", "slot", "suspect", "peer", "auditor",
            "verdict", "reason", "heal", "evict", "strikes", "devices", "device", "host", "replacement_slot")

    def rows(name: str, match: Any = None) -> list[dict[str, Any]]:
        return [{k: e[k] for k in keep if k in e} | {"t": e["t"]} for e in events
                if e["event"] == name and (match is None or match(e))]

    verdicts = rows("numeric_verdict")
    return {"injected": rows("fault_injected", is_numeric), "triggers": rows("numeric_trigger"),
            "verdicts": verdicts, "verdict_counts": dict(Counter(v["verdict"] for v in verdicts)),
            "evicted": rows("replica_evicted"), "banned": rows("device_banned")}


def render(report: dict[str, Any], console: Any) -> None:
    """Print the ``numbers`` part of ``report`` as rich tables (nothing when the run had none)."""
    from rich.table import Table

    n = report.get("numbers") or {}
    if not (n.get("injected") or n.get("verdicts") or n.get("evicted")):
        return
    t0 = report["t_start"]
    table = Table(title="wrong numbers: injections, triggers and verdicts")
    for col in ("at", "step", "what", "replica", "detail"):
        table.add_column(col, justify="right" if col in ("at", "step", "replica") else "left")
    lines = [(e["t"], e.get("step"), f"injected {e.get('kind')}", e.get("replica"), e.get("spec", ""))
             for e in n["injected"]]
    lines += [(e["t"], e.get("step"), f"trigger {e.get('kind')}", e.get("suspect"), e.get("reason", ""))
              for e in n["triggers"]]
    lines += [(e["t"], e.get("step"), f"verdict {e.get('verdict')}", e.get("suspect"), e.get("reason", ""))
              for e in n["verdicts"]]
    lines += [(e["t"], e.get("step"), "evicted", e.get("replica"), f"device {e.get('device')}") for e in n["evicted"]]
    for t, step, what, who, detail in sorted(lines, key=lambda x: x[0]):
        table.add_row(f"{t - t0:.1f}", "-" if step is None else str(step), what, "-" if who is None else str(who),
                      str(detail)[:160])
    console.print(table)
    if n["evicted"]:
        console.print("evicted devices: " + ", ".join(f"{e.get('device')} (replica {e.get('replica')})"
                                                      for e in n["evicted"]))
