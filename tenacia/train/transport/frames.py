"""The transport's wire format and settings.

Every stream is one-way (the sender opened it) and carries frames in order. A frame is a fixed
header, the member list of the sender's group, then ``length`` payload bytes:

    magic "TNX1" | kind u8 | sender u16 | members u16 | round u64 | offset u64 | length u64 | total u64
    | members x u32 (the group's member ids, in rank order)

The header is the control message: the round id (a step, a sync round) and the member list ride
with the data, so agreeing on them costs no round trip of its own. A receiver that sees another
round, another member list or another kind than it expects raises ``TransportError`` rather than
mixing data of two rounds or two groups.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"TNX1"
_HEAD = struct.Struct("<4sBHHQQQQ")

HELLO = 0  # the first frame of a stream: offset = the stream's index
REDUCE_SCATTER = 1  # a slice of the receiver's chunk, from the sender's input
ALL_GATHER = 2  # a slice of the sender's chunk, reduced
WHOLE = 3  # a slice of the sender's whole input (small all-reduce, all-gather); total = its size
KIND_NAMES = {HELLO: "hello", REDUCE_SCATTER: "reduce-scatter", ALL_GATHER: "all-gather", WHOLE: "whole"}


class TransportError(RuntimeError):
    """A collective could not complete: a peer closed, answered in another round or group, or
    did not answer before the deadline. The mesh it came from is closed and cannot be reused."""


def window_for(rate_mbit: float, rtt_ms: float, streams: int) -> int:
    """Per-stream socket buffer for a link of ``rate_mbit`` and ``rtt_ms``: its bandwidth-delay
    product split across ``streams``, at least 64 KiB."""
    return max(65536, int(rate_mbit * 1e6 / 8 * rtt_ms / 1000 / streams))


@dataclass(frozen=True, slots=True)
class Header:
    kind: int
    sender: int
    round: int
    offset: int
    length: int
    total: int
    members: tuple[int, ...]

    def pack(self) -> bytes:
        return (_HEAD.pack(MAGIC, self.kind, self.sender, len(self.members), self.round, self.offset, self.length,
                           self.total) + struct.pack(f"<{len(self.members)}I", *self.members))


def header_size(members: int) -> int:
    return _HEAD.size + 4 * members


def unpack(data: bytes | memoryview) -> Header:
    magic, kind, sender, n, round_id, offset, length, total = _HEAD.unpack_from(data)
    if magic != MAGIC or kind not in KIND_NAMES:
        raise TransportError(f"not a transport frame (magic {bytes(magic)!r}, kind {kind})")
    members = struct.unpack_from(f"<{n}I", data, _HEAD.size)
    return Header(kind, sender, round_id, offset, length, total, members)
