"""Every event kind the code writes is documented in docs/events.md (its schema)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_emitted_event_is_in_the_schema():
    emitted = set()
    for path in (ROOT / "tenacia").rglob("*.py"):
        emitted |= set(re.findall(r'\.emit\(\s*"([a-z_]+)"', path.read_text()))
    documented = set(re.findall(r"`([a-z_]+)`", (ROOT / "docs" / "events.md").read_text()))
    assert emitted and sorted(emitted - documented) == []
