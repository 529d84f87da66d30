"""Stand-ins shared by the coordinator's unit tests."""

from tenacia.train.replicas.protocol import Message


class FakeConn:
    """A member's control connection that records what the coordinator sends it."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def try_send(self, msg: Message) -> bool:
        self.sent.append(msg)
        return True

    def close(self) -> None:
        pass


class FakeClock:
    """A clock the test moves: ``now`` (monotonic) and ``wall`` advance together."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1.7e9 + self.t

    def sleep(self, seconds: float) -> None:
        raise AssertionError("a driven coordinator never sleeps: the test calls tick()")
