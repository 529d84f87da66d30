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
