"""Stand-ins shared by the coordinator's unit tests."""


class FakeConn:
    """A member's control connection that records what the coordinator sends it."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def try_send(self, msg: dict) -> bool:
        self.sent.append(msg)
        return True

    def close(self) -> None:
        pass
