"""Fault schedules: parsing with clear errors (process faults and wrong numbers), seeded random kills."""

import pytest

from tenacia import config, hooks
from tenacia.chaos.injector import random_kills
from tenacia.faults import (
    SDC_SITES,
    ChaosConfig,
    Fault,
    LrSpike,
    NumericFault,
    numeric_faults,
    parse_entry,
    parse_fault,
    process_faults,
)
from tenacia.train.config import RunConfig


@pytest.mark.parametrize("text, fault", [
    ("kill:1@20", Fault("kill", 20, 1)),
    ("hang:2@30:2.5", Fault("hang", 30, 2, 2.5)),
    ("hang:2@30:+20", Fault("hang", 30, 2, resume_after=20)),
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
    ("slow:1@3:+2", "only after hang"), ("hang:1@3:+0", "a whole number >= 1"), ("hang:1@3:+1.5", ":+STEPS"),
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


@pytest.mark.parametrize("text, entry", [
    ("sdc:1@20:local_grads:exponent", NumericFault(1, 20, "local_grads", "exponent")),
    ("sdc:0@5:params:multi:every", NumericFault(0, 5, "params", "multi", "every")),
    ("sdc:3@0:vote:nan:once", NumericFault(3, 0, "vote", "nan")),
    ("sdc:2@7:activations:mantissa_low:q=0.25", NumericFault(2, 7, "activations", "mantissa_low", "q", 0.25)),
    ("lr_spike@30:10", LrSpike(30, 10.0)),
    ("lr_spike@4:0.5", LrSpike(4, 0.5)),
])
def test_parse_wrong_numbers(text, entry):
    assert parse_entry(text) == entry and parse_entry(entry.spec) == entry


@pytest.mark.parametrize("text, why", [
    ("sdc:1@2:lr:sign", "SITE one of params, moments, activations, local_grads, reduced_grads, loss, vote"),
    ("sdc:1@2:params:bitrot", "BITS one of sign, exponent, mantissa_high, mantissa_low, multi, nan, inf, zero"),
    ("sdc:1@2:params:sign:sometimes", "WHEN one of once, every, q=<prob>"),
    ("sdc:1@2:params:sign:q=0", "q=<prob> with 0 < prob <= 1"),
    ("sdc:1@2:params:sign:q=1.5", "q=<prob>"), ("sdc:1@2:params:sign:q=x", "q=<prob>"),
    ("sdc@2:params:sign", "sdc:SLOT@STEP:SITE:BITS[:WHEN]"), ("sdc:1@2:params", "sdc:SLOT@STEP:SITE:BITS"),
    ("lr_spike@3:0", "FACTOR a finite number > 0"), ("lr_spike@3:-2", "lr_spike@STEP:FACTOR"),
    ("lr_spike@3:inf", "finite"), ("lr_spike:1@3:2", "lr_spike@STEP:FACTOR"), ("lr_spike@3", "FACTOR"),
    ("flip:1@2", "sdc:SLOT@STEP:SITE:BITS[:WHEN], lr_spike@STEP:FACTOR"),
])
def test_bad_wrong_numbers_name_the_field_and_the_forms(text, why):
    with pytest.raises(config.ConfigError) as e:
        config.load(RunConfig, None, [f'chaos.faults=["kill:0@1", "{text}"]'])
    assert e.value.field == "chaos.faults[1]" and why in str(e.value)


def test_a_schedule_splits_into_process_faults_and_wrong_numbers():
    chaos = ChaosConfig(faults=["kill:1@20", "sdc:0@3:loss:sign", "lr_spike@5:10", "hang:2@9:1"])
    assert chaos.any and ChaosConfig(faults=["lr_spike@5:10"]).any and not ChaosConfig().any
    assert process_faults(chaos) == [Fault("kill", 20, 1), Fault("hang", 9, 2, 1.0)]
    assert numeric_faults(chaos) == [NumericFault(0, 3, "loss", "sign"), LrSpike(5, 10.0)]


def test_sdc_sites_are_the_tamper_sites_but_lr():
    assert SDC_SITES == tuple(s for s in hooks.TAMPER_SITES if s != "lr")
