"""Every duration of the replicas lives in ``Timing``: built from the config, its rules as stated,
and no other module of the package holding a timeout or period of its own."""

import ast
from pathlib import Path

from tenacia.train.config import ReplicaConfig
from tenacia.train.replicas.timing import Timing

PACKAGE = Path(__file__).resolve().parents[3] / "tenacia" / "train" / "replicas"
# calls whose numeric argument is a duration
TIMED = {"sleep", "timedelta", "connect", "create_connection", "wait", "wait_for", "join", "get", "settimeout",
         "set_kernel_timeout"}
ALLOWED: set[tuple[str, str, float]] = set()


def test_built_from_the_config():
    cfg = ReplicaConfig(hang_floor_s=0.8, hang_factor=2.0, join_grace_s=7.0, restart_backoff_s=0.3)
    t = Timing.from_config(cfg)
    assert (t.hang_floor_s, t.hang_factor, t.join_grace_s, t.restart_backoff_s) == (0.8, 2.0, 7.0, 0.3)
    assert t.heartbeat_s == Timing().heartbeat_s  # the rest keep their documented defaults


def test_the_hang_and_stuck_bounds_follow_the_measured_steps():
    t = Timing(hang_floor_s=0.5, hang_factor=1.5)
    assert t.hang_bound([]) == t.hang_bound([9.0, 9.0]) == 0.5  # too few steps measured: the floor
    assert t.hang_bound([0.1, 0.2, 0.3]) == 0.5  # fast steps: still the floor
    assert t.hang_bound([1.0, 2.0, 9.0]) == 3.0  # 1.5 x the median, not the mean
    assert t.stuck_bound(0.5) == 10.0 and t.stuck_bound(3.0) == 12.0
    assert t.frozen_after(0.2) == 0.5 and t.frozen_after(3.0) == 3.0
    assert [Timing(restart_backoff_s=1.5).restart_backoff(n) for n in (1, 2, 3)] == [1.5, 3.0, 5.0]


def test_no_module_but_timing_holds_a_duration():
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "timing.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):  # HEARTBEAT_S = 0.1
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                found += [f"{path.name}:{node.lineno} {n}" for n in names if n.endswith(("_S", "TIMEOUT"))]
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in TIMED:
                continue
            values = [*node.args, *(k.value for k in node.keywords)]
            for v in values:
                if (isinstance(v, ast.Constant) and isinstance(v.value, (int, float))
                        and not isinstance(v.value, bool) and (path.name, name, v.value) not in ALLOWED):
                    found.append(f"{path.name}:{node.lineno} {name}({v.value})")
    assert found == [], found
