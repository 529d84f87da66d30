"""The engine process's loop gathers a burst of requests before the first step of an idle engine
(``process_engine.ARRIVAL_QUIET_S``, ``ARRIVAL_MOST_S``): requests that arrive one after another
within the quiet time join the first prefill; the wait ends at the first quiet poll, never lasts
past the cap however fast messages come, and never happens for an engine already at work. A
scripted connection and a fake clock: no test here depends on how fast the machine is."""

from __future__ import annotations

from tenacia.serve.engine import process_engine as pe
from tenacia.serve.engine.messages import Add, Stop, Stopped
from tenacia.serve.engine.process_engine import EngineWorker, Recorder
from tenacia.serve.engine.sequence import SamplingParams

PARAMS = SamplingParams(max_tokens=1)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Conn:
    """Messages that become ready at given times; a poll with a timeout advances the fake clock to
    the next arrival, or by the whole timeout when none comes within it."""

    def __init__(self, clock: Clock, arrivals: list[tuple[float, object]]):
        self.clock, self.arrivals, self.sent, self.timeouts = clock, list(arrivals), [], []

    def poll(self, timeout: float = 0.0) -> bool:
        if timeout:
            self.timeouts.append(timeout)
        if self.arrivals and self.arrivals[0][0] <= self.clock.now:
            return True
        if self.arrivals and self.arrivals[0][0] <= self.clock.now + timeout:
            self.clock.now = self.arrivals[0][0]
            return True
        self.clock.now += timeout
        return False

    def recv(self):
        return self.arrivals.pop(0)[1]

    def send(self, message) -> None:
        self.sent.append(message)


class Engine:
    def __init__(self, busy: bool = False):
        self.added, self.busy = [], busy

    def has_work(self) -> bool:
        return self.busy or bool(self.added)

    def add_request(self, part, prompt, params) -> None:
        self.added.append(part)

    def abort(self, part) -> None:
        self.added.remove(part)


def add(i: int) -> Add:
    return Add([f"r{i}"], [[1, 2, 3]], PARAMS)


def test_a_burst_to_an_idle_engine_is_gathered_until_a_quiet_poll():
    clock = Clock()
    gap = pe.ARRIVAL_QUIET_S / 2  # each request half the quiet time after the one before
    conn = Conn(clock, [(i * gap, add(i)) for i in range(5)] + [(1.0, add(9))])
    engine = Engine()
    assert EngineWorker(engine, conn, Recorder(), clock=clock).receive()
    assert engine.added == ["r0", "r1", "r2", "r3", "r4"]
    assert clock.now == 4 * gap + pe.ARRIVAL_QUIET_S  # the wait ended at the first quiet poll


def test_the_wait_never_lasts_past_its_cap():
    clock = Clock()
    gap = pe.ARRIVAL_QUIET_S / 4
    conn = Conn(clock, [(i * gap, add(i)) for i in range(1000)])
    engine = Engine()
    EngineWorker(engine, conn, Recorder(), clock=clock).receive()
    assert clock.now <= pe.ARRIVAL_MOST_S + 1e-12
    assert 1 < len(engine.added) <= pe.ARRIVAL_MOST_S / gap + 2


def test_an_engine_at_work_does_not_wait_and_stop_still_stops():
    clock = Clock()
    conn = Conn(clock, [(0.0, add(0)), (pe.ARRIVAL_QUIET_S / 2, add(1))])
    engine = Engine(busy=True)
    EngineWorker(engine, conn, Recorder(), clock=clock).receive()
    assert engine.added == ["r0"] and conn.timeouts == []  # the next step runs at once

    clock = Clock()
    conn = Conn(clock, [(0.0, add(0)), (pe.ARRIVAL_QUIET_S / 2, Stop())])
    assert EngineWorker(Engine(), conn, Recorder(), clock=clock).receive() is False
    assert isinstance(conn.sent[-1], Stopped)
