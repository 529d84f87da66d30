"""Link changes of a run: the ``[chaos]`` link entries' grammar, when each takes effect (a fake
clock), the units of ``tenacia chaos link``, and where the launcher places each replica."""

import json

import pytest

from tenacia import config
from tenacia.chaos.link_cli import (
    parse_delay,
    parse_loss,
    parse_partition,
    parse_rate,
    train_config,
)
from tenacia.chaos.link_run import link_set
from tenacia.chaos.link_schedule import LinkAction, LinkSchedule
from tenacia.faults import (
    ChaosConfig,
    LinkChange,
    link_changes,
    numeric_faults,
    parse_entry,
    process_faults,
)
from tenacia.train.config import RunConfig
from tenacia.train.replicas.placement import PLACEMENT_ENV, Place, Placement


@pytest.mark.parametrize("text, change", [
    ("link_delay@30s:50", LinkChange("link_delay", 50.0, seconds=30.0)),
    ("link_rate@12:100", LinkChange("link_rate", 100.0, step=12)),
    ("link_loss@2.5s:0.01", LinkChange("link_loss", 0.01, seconds=2.5)),
    ("partition:1@40:5", LinkChange("partition", 5.0, step=40, node=1)),
])
def test_link_entries_parse_and_print_back(text, change):
    assert parse_entry(text) == change and parse_entry(change.spec) == change


@pytest.mark.parametrize("text, why", [
    ("link_delay:1@3:5", "node number with partition only"), ("partition@3:4", "node number with partition only"),
    ("link_loss@3:1", "0 <= P < 1"), ("partition:1@3:0", "SECONDS > 0"), ("link_delay@3", "link_delay@AT:MS"),
    ("link_rate@3m:5", "link_rate@AT:MBIT"),
])
def test_bad_link_entries_name_the_field_and_the_forms(text, why):
    with pytest.raises(config.ConfigError) as e:
        config.load(RunConfig, None, [f'chaos.faults=["kill:0@1", "{text}"]'])
    assert e.value.field == "chaos.faults[1]" and why in str(e.value)


def test_link_entries_are_kept_apart_from_process_faults_and_wrong_numbers():
    chaos = ChaosConfig(faults=["kill:1@5", "link_delay@3:20", "sdc:0@4:loss:sign", "partition:0@2s:1"])
    assert [f.kind for f in process_faults(chaos)] == ["kill"]
    assert [f.spec for f in numeric_faults(chaos)] == ["sdc:0@4:loss:sign"]
    assert [c.spec for c in link_changes(chaos)] == ["link_delay@3:20", "partition:0@2s:1"]


def test_schedule_fires_by_step_and_by_time_since_the_first_commit():
    s = LinkSchedule([parse_entry(t) for t in ("link_delay@5:40", "link_rate@2s:100", "partition:1@3:1.5",
                                               "link_loss@0:0.01")])
    assert s.due(0, 100.0) == [LinkAction("loss", value=0.01, spec="link_loss@0:0.01")]  # step 0: at once
    assert s.due(0, 200.0) == []  # no commit yet: time entries wait for the first one
    assert s.due(3, 201.0) == [LinkAction("disconnect", node=1, spec="partition:1@3:1.5")]
    assert s.due(4, 202.0) == []
    assert s.due(4, 202.5) == [LinkAction("reconnect", node=1, spec="partition:1@3:1.5")]
    assert s.due(4, 203.0) == [LinkAction("rate_mbit", value=100.0, spec="link_rate@2s:100")]
    assert s.due(9, 203.1) == [LinkAction("delay_ms", value=40.0, spec="link_delay@5:40")]
    assert s.due(100, 1e6) == [] and not s.pending


@pytest.mark.parametrize("parse, text, value", [
    (parse_delay, "100ms", 100.0), (parse_delay, "0.25s", 250.0), (parse_delay, "7", 7.0),
    (parse_rate, "100mbit", 100.0), (parse_rate, "1gbit", 1000.0), (parse_rate, "500kbit", 0.5),
    (parse_rate, "0", 0.0), (parse_loss, "0.1%", 0.001), (parse_loss, "0.02", 0.02),
])
def test_units(parse, text, value):
    assert parse(text) == pytest.approx(value)


@pytest.mark.parametrize("parse, text, flag", [
    (parse_delay, "-3ms", "--delay"), (parse_delay, "10 min", "--delay"), (parse_rate, "10mb", "--rate"),
    (parse_loss, "100%", "--loss"), (parse_loss, "1.5", "--loss"), (parse_partition, "1", "--partition"),
])
def test_bad_units_name_the_flag(parse, text, flag):
    with pytest.raises(config.ConfigError) as e:
        parse(text)
    assert e.value.field == flag


def test_the_training_command_is_read_like_tenacia_train_reads_it(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[replicas]\nfirst_id = 4\n[chaos]\nfaults = ["link_rate@3:10"]\n')
    cfg = train_config(["python", "-m", "tenacia", "train", "-c", str(toml), "--replicas", "3",
                        "--run-dir", "/tmp/x", "-o", "train.steps=7"])
    assert (cfg.replicas.count, cfg.replicas.first_id, cfg.train.run_dir, cfg.train.steps) == (3, 4, "/tmp/x", 7)
    assert [c.spec for c in link_changes(cfg.chaos)] == ["link_rate@3:10"]
    with pytest.raises(config.ConfigError, match="tenacia train"):
        train_config(["sleep", "10"])


def test_placement_puts_replica_i_at_place_i_mod_places(tmp_path, monkeypatch):
    placement = Placement((Place(("ip", "netns", "exec", "a"), {"GLOO_SOCKET_IFNAME": "lab0"}, ("replicas.host=10.0.0.1",)),
                           Place(("ip", "netns", "exec", "b"), {}, ("replicas.host=10.0.0.2",))))
    path = tmp_path / "placement.json"
    placement.write(path)
    monkeypatch.setenv(PLACEMENT_ENV, str(path))
    loaded = Placement.from_env()
    assert loaded == placement
    cmd, env = loaded.command(2, ["python", "-m", "tenacia", "replica"], {"A": "1"})
    assert cmd == ["ip", "netns", "exec", "a", "python", "-m", "tenacia", "replica", "-o", "replicas.host=10.0.0.1"]
    assert env == {"A": "1", "GLOO_SOCKET_IFNAME": "lab0"}
    assert loaded.command(1, ["x"], {})[0] == ["ip", "netns", "exec", "b", "x", "-o", "replicas.host=10.0.0.2"]
    assert not Placement.from_env({}) and Placement.none().command(0, ["x"], {"B": "2"}) == (["x"], {"B": "2"})
    path.write_text(json.dumps({"places": 3}))
    with pytest.raises(config.ConfigError, match=PLACEMENT_ENV):
        Placement.from_env()


def test_link_set_without_a_running_link_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="no 'tenacia chaos link' is running"):
        link_set(tmp_path, {"delay_ms": 5.0})
    (tmp_path / "link.json").write_text(json.dumps({"pid": 2**22 + 7, "finished": False}))  # a pid not alive
    with pytest.raises(RuntimeError, match="no 'tenacia chaos link' is running"):
        link_set(tmp_path, {"delay_ms": 5.0})
