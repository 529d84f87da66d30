"""The silence bound that declares a member hung comes from measured heartbeat gaps."""

from collections import deque
from types import SimpleNamespace

import pytest

from tenacia.train.coordinator import HB_WINDOW, HEARTBEAT_S, MIN_GAPS, SILENCE_FACTOR, Coordinator


def silence(gaps: list[float], hang_timeout: float = 1.0) -> float:
    fake = SimpleNamespace(beat_gaps=deque(gaps, maxlen=HB_WINDOW), hang_timeout=hang_timeout)
    return Coordinator.silence_timeout.fget(fake)


def test_before_enough_gaps_the_step_based_bound_stands_in():
    assert silence([0.1] * (MIN_GAPS - 1), hang_timeout=0.9) == 0.9


def test_bound_follows_the_longest_measured_gap():
    assert silence([0.1] * 100 + [0.13]) == pytest.approx(SILENCE_FACTOR * 0.13)


def test_bound_is_at_least_a_few_heartbeat_periods_and_at_most_the_hang_bound():
    assert silence([0.01] * 100) == pytest.approx(SILENCE_FACTOR * HEARTBEAT_S)
    assert silence([0.1] * 100 + [0.6], hang_timeout=0.97) == 0.97


def test_old_gaps_age_out_of_the_window():
    gaps = [0.3] + [0.1] * HB_WINDOW  # one slow gap, then a full window of regular ones
    assert silence(gaps) == pytest.approx(SILENCE_FACTOR * 0.1)
