"""Shared helpers for the planner's tests (pure numpy: nothing here needs torch)."""

import pytest

from tenacia import config
from tenacia.plan.catalog import load_catalog
from tenacia.plan.inputs import build
from tenacia.plan.scenario import TrainPlan


@pytest.fixture(scope="session")
def chips():
    return load_catalog()


@pytest.fixture
def plan_from():
    """Build a TrainPlan the way the CLI does: scenario or TOML, shorthand flags, overrides."""

    def make(scenario=None, flags=(), overrides=()):
        return config.from_dict(TrainPlan, build(scenario, list(flags), list(overrides)))

    return make
