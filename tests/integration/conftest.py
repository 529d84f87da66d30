import pytest

from .procs import Procs


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.kill_all()
