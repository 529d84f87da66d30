"""bench/results_file.py: every benchmark's JSON carries when, how and on what it was measured."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_results_carry_date_command_and_machine(tmp_path):
    spec = importlib.util.spec_from_file_location("results_file", REPO / "bench" / "results_file.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = mod.write_results("x", {"rows": [1, 2], "date": "kept"}, tmp_path / "sub" / "x.json")
    doc = json.loads(path.read_text())
    assert doc["rows"] == [1, 2] and doc["date"] == "kept"  # the bench's own keys win
    m = doc["machine"]
    assert m["cpu"] and m["cores"] >= 1 and len(m["load_average"]) == 3 and isinstance(m["isas"], list)
    assert doc["command"].startswith(".venv/bin/python")
