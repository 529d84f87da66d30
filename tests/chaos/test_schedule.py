"""Fault schedules: parsing with clear errors, seeded random kills."""

import pytest

from tenacia import config
from tenacia.chaos.injector import random_kills
from tenacia.faults import Fault, parse_fault
from tenacia.train.config import RunConfig


@pytest.mark.parametrize("text, fault", [
    ("kill:1@20", Fault("kill", 20, 1)),
    ("hang:2@30:2.5", Fault("hang", 30, 2, 2.5)),
    ("slow:0@5:3", Fault("slow", 5, 0, 3.0)),
    ("kill_coordinator@40", Fault("kill_coordinator", 40)),
    ("kill_healing@7", Fault("kill_healing", 7)),
    ("kill_checkpoint@100", Fault("kill_checkpoint", 100)),
])
def test_parse(text, fault):
    assert parse_fault(text) == fault and parse_fault(fault.spec) == fault


@pytest.mark.parametrize("text, why", [
    ("explode:1@2", "one of kill:R@S"), ("kill@3", "needs replica"), ("hang:1@3", "needs ':value'"),
    ("kill_coordinator:1@3", "takes no replica"), ("slow:1@3:0.5", ">= 1"), ("kill:1", "one of"),
])
def test_bad_entries_name_the_field_and_the_forms(text, why):
    with pytest.raises(config.ConfigError) as e:
        config.load(RunConfig, None, [f'chaos.faults=["kill:0@1", "{text}"]'])
    assert e.value.field == "chaos.faults[1]" and why in str(e.value)


def test_random_kills_are_seeded():
    a = random_kills(0.5, 60, 4, seed=3)
    assert a == random_kills(0.5, 60, 4, seed=3) != random_kills(0.5, 60, 4, seed=4)
    assert all(0 <= t < 60 and 0 <= r < 4 for t, r in a) and 10 < len(a) < 60
    assert random_kills(0.0, 60, 4, seed=3) == []
