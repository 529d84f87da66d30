"""bench/slow_links_settings.py: which settings each arm of bench/slow_links.py trains with, and the
16x budget's file against the plain-loop probes it was taken from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from slow_links_arms import TENACIA_ARMS, TWINS, tenacia_common  # noqa: E402
from slow_links_settings import SETTINGS_FILE, settings_overrides, use_settings  # noqa: E402

from tenacia import config  # noqa: E402
from tenacia.train.config import RunConfig  # noqa: E402

PLAIN = {"lr": 2e-3, "min_lr_ratio": 0.1, "outer_lr": 0.7, "outer_momentum": 0.9}


@pytest.fixture(autouse=True)
def default_settings():
    yield
    use_settings(SETTINGS_FILE, TWINS)  # the module's settings in use, as the other tests expect them


def test_a_file_names_its_arms_twins_take_their_twins_and_an_arm_it_lacks_has_none(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"settings": {"ddp": {"lr": 5e-3, "min_lr_ratio": 0.1}, "diloco": PLAIN,
                                             "diloco-int2-rs": {**PLAIN, "lr": 1e-3}}}))
    s = use_settings(path, TWINS)
    assert s["diloco-spec"] == PLAIN and s["diloco-spec-int2-rs"]["lr"] == 1e-3
    assert settings_overrides("diloco-spec-int2-rs") == ["optim.lr=0.001", "optim.min_lr_ratio=0.1",
                                                         "replicas.outer.lr=0.7", "replicas.outer.momentum=0.9"]
    assert "diloco-eager" not in s and "diloco-eager-spec" not in s
    with pytest.raises(KeyError):
        settings_overrides("diloco-eager-spec")


def test_the_int2_arm_takes_diloco_s_settings_where_a_file_has_none_of_its_own(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"settings": {"ddp": {"lr": 5e-3, "min_lr_ratio": 0.1}, "diloco": PLAIN}}))
    s = use_settings(path, TWINS)
    assert s["diloco-int2-rs"] == PLAIN and s["diloco-spec-int2-rs"] == PLAIN
    default = json.loads(SETTINGS_FILE.read_text())["settings"]  # the 1x probe's file has no int2 entry
    assert "diloco-int2-rs" not in default
    assert use_settings(SETTINGS_FILE, TWINS)["diloco-spec-int2-rs"] == default["diloco"]


@pytest.mark.parametrize("arm", ["diloco-int2-rs", "diloco-spec-int2-rs"])
def test_the_int2_arms_are_diloco_with_int2_through_the_reduce_scatter(arm):
    a = type("A", (), {"preset": "micro", "seq_len": 64, "batch": 8, "eval_batches": 8, "inner_steps": 100,
                       "fragments": 4})()
    cfg = config.load(RunConfig, overrides=[*tenacia_common(a), *TENACIA_ARMS[arm], *settings_overrides(arm)])
    o = cfg.replicas.outer
    assert (cfg.replicas.sync, o.quantize, o.exchange, o.topk, o.transport) == \
        ("diloco", "int2", "reduce_scatter", 0.0, "streams")
    assert o.speculate == (arm == "diloco-spec-int2-rs")


def test_the_16x_file_holds_the_settings_its_plain_loop_probes_ran():
    doc = json.loads((ROOT / "bench" / "slow_links_settings_16x.json").read_text())
    s = doc["settings"]
    assert s["ddp"] == {"lr": 5e-3, "min_lr_ratio": 0.1}  # bench/diloco_gap.py's ddp at every scale
    outer = 0
    for probe in doc["probe"]:
        run = json.loads((ROOT / probe).read_text())
        assert " --scale 16" in run["command"]
        for row in run["rows"]:
            if row["variant"] != "outer":
                continue
            spec = row["spec"]
            arm = "diloco-int2-rs" if spec["quantize"] == "int2" else "diloco"
            assert spec.get("exchange", "all_gather") == ("reduce_scatter" if arm == "diloco-int2-rs" else "all_gather")
            assert (spec["h"], spec["topk"], spec["block"]) == (100, 0.0, 256)
            assert s[arm] == {"lr": spec["lr"], "min_lr_ratio": spec["floor"], "outer_lr": spec["outer_lr"],
                              "outer_momentum": spec["momentum"]}
            outer += 1
    assert outer > 0
