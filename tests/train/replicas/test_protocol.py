"""The replicas' messages: every one survives the wire unchanged with integer ids, a malformed header
is refused with an error naming its field, and the quorum's next-step rule is the one rule."""

import base64
import dataclasses
import json
import socket
import struct
import zlib

import pytest

from tenacia.train.replicas.codec import pack_ints, unpack_ints
from tenacia.train.replicas.protocol import (
    WIRE,
    Addrs,
    Bye,
    Expelled,
    Frozen,
    HealError,
    HealRequest,
    HealState,
    Heartbeat,
    Hello,
    LeaderHeartbeat,
    LeaderLost,
    ProtocolError,
    Quorum,
    Recheck,
    Rechecked,
    Redirect,
    Resolve,
    Retry,
    Stop,
    Verdict,
    Vote,
    Wait,
    Wake,
    Welcome,
    decode,
    encode,
)
from tenacia.train.replicas.wire import Conn

VOTE = Vote(replica=2, quorum_id=7, step=41, ok=True, start=1280, ids=(3, 4), batch=tuple(range(8)), tokens=128,
            loss=2.5, reused=1, timing={"received": 1.0, "compute_start": None})
QUORUM = Quorum(quorum_id=7, term=3, leader=0, step=41, members=(0, 2, 5), sharers=(0, 2),
                shares={0: (0, 1, 2, 3), 2: (4, 5, 6, 7)}, heal={5: 0}, store="127.0.0.1:4000",
                addrs={r: Addrs(f"h:{r}", f"h:{r + 100}") for r in (0, 2, 5)}, hang_timeout=0.75,
                resolve=Resolve(step=40, commit=False), formed_t=1234.5)
EXAMPLES = [
    Hello(replica=5, control="h:1", heal="h:2", committed=40, pending=41, pending_vote=VOTE, quorum_seen=6),
    Heartbeat(replica=2, step=41, phase="allreduce", committed=40, pending=None),
    VOTE, Bye(replica=2), Welcome(leader=0, term=3), Retry(replica=1, term=2), Redirect(address="h:9"),
    LeaderHeartbeat(), LeaderHeartbeat(hang_timeout=7.5), QUORUM, Verdict(quorum_id=7, step=41, commit=True), Wait(reason="1 live < 2"),
    Verdict(quorum_id=7, step=41, commit=False, skip=True), Recheck(quorum_id=7, step=41, suspect=2, share_of=2, chunks=((0, 1), (5,))),
    Rechecked(replica=1, quorum_id=7, step=41, suspect=2, outcome={"grad": "00ff", "loss": 2.5, "gnorm": 0.75}),
    Expelled(reason="faulty", evict=True),
    Stop(reason="finished", step=200), Expelled(reason="silent"), HealRequest(quorum_id=7),
    HealState(model=(("w", "float32", (2, 3), 0, 24),), optim=(), meta={"step": 40, "sampler": {"position": 8}}),
    HealError(reason="no state offered for quorum 7"),
]


def over_json(msg):
    return decode(json.loads(json.dumps(encode(msg))))


def test_every_wire_message_has_an_example_with_a_tag_of_its_own():
    assert {type(m) for m in EXAMPLES} == set(WIRE.values())
    assert len(WIRE) == len({cls.TAG for cls in WIRE.values()}) == 18


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_a_message_comes_back_equal_with_integer_ids(msg):
    assert over_json(msg) == msg


def test_ids_are_integers_in_memory_and_strings_only_as_json_keys():
    wire = encode(QUORUM)
    assert wire["type"] == "quorum" and wire["heal"] == {"5": 0} and set(wire["addrs"]) == {"0", "2", "5"}
    back = over_json(QUORUM)
    assert list(back.shares) == [0, 2] and back.heal == {5: 0} and back.addrs[5] == Addrs("h:5", "h:105")
    assert back.members == (0, 2, 5) and back.resolve == Resolve(40, False)


def test_notices_inside_a_replica_are_never_sent():
    for notice in (Wake(), LeaderLost(why="connection closed", at=1.0), Frozen(gap_s=3.0)):
        with pytest.raises(ProtocolError, match="not a wire message"):
            encode(notice)


@pytest.mark.parametrize("header, names", [
    ({"type": "votes"}, "unknown message type 'votes'"),
    ({"replica": 1}, "unknown message type None"),
    ({"type": "bye"}, "bye: missing field 'replica'"),
    ({"type": "bye", "replica": "1"}, "bye.replica: expected an integer, got str '1'"),
    ({"type": "bye", "replica": True}, "bye.replica: expected an integer, got bool"),
    ({"type": "bye", "replica": 1, "replicas": 2}, "bye: unknown field 'replicas'"),
    ({"type": "verdict", "quorum_id": 1, "step": 2, "commit": 1}, "verdict.commit: expected true or false"),
    ({**encode(QUORUM), "heal": {"x": 0}}, "quorum.heal: key 'x' is not an integer"),
    ({**encode(QUORUM), "shares": {"0": [0, "1"]}}, "quorum.shares[0][1]: expected an integer"),
    ({**encode(QUORUM), "addrs": {"0": {"control": "h:0"}}}, "quorum.addrs[0]: missing field 'heal'"),
    ({**encode(QUORUM), "resolve": {"step": 1, "commit": None}}, "quorum.resolve.commit: expected true or false"),
    ({**encode(QUORUM), "members": 3}, "quorum.members: expected a list, got int"),
    ({**encode(VOTE), "loss": "nan"}, "vote.loss: expected a number, got str"),
    ({**encode(HealState(model=(), optim=())), "model": [["w", "float32", [2], 0]]},
     "state.model[0]: expected 5 items, got 4"),
])
def test_a_malformed_header_is_refused_naming_the_field(header, names):
    with pytest.raises(ProtocolError) as e:
        decode(header)
    assert names in str(e.value)


def test_a_malformed_message_on_a_connection_reads_as_a_broken_connection_that_says_why():
    listener = socket.create_server(("127.0.0.1", 0))
    sender = Conn.connect(f"127.0.0.1:{listener.getsockname()[1]}", timeout=2.0)
    receiver = Conn(listener.accept()[0])
    a = sender.sock
    try:
        sender.send(VOTE)
        assert receiver.recv() == (VOTE, [])
        raw = json.dumps({"type": "vote", "replica": 2, "blobs": 0}).encode()
        a.sendall(struct.pack("!I", len(raw)) + raw)
        with pytest.raises(ConnectionError, match="malformed message: vote: missing field 'quorum_id'"):
            receiver.recv()
    finally:
        sender.close()
        receiver.close()
        listener.close()


def test_the_next_step_of_a_quorum_shares_the_batch_among_all_members_and_heals_nobody():
    nxt = QUORUM.next_step(batch_size=9)
    assert (nxt.step, nxt.sharers, nxt.heal, nxt.resolve) == (42, (0, 2, 5), {}, None)
    assert nxt.shares == {0: (0, 1, 2), 2: (3, 4, 5), 5: (6, 7, 8)}
    same = {f.name for f in dataclasses.fields(Quorum)} - {"step", "sharers", "heal", "resolve", "shares"}
    assert all(getattr(nxt, f) == getattr(QUORUM, f) for f in same)  # the same quorum: no new group


def test_a_rounds_long_id_tuples_are_packed_and_come_back_equal():
    batch = tuple((i * 7919) % 31_000 for i in range(3200))  # a shuffled batch of a diloco round at H = 100
    vote = Vote(replica=1, quorum_id=2, step=3, ok=True, start=6400, ids=batch[800:1600], batch=batch)
    verdict = Verdict(quorum_id=2, step=3, commit=True, shares={r: tuple(range(800 * r, 800 * (r + 1))) for r in range(4)})
    for msg, limit in ((vote, 4000 * 3), (verdict, 400)):
        header = json.loads(json.dumps(encode(msg)))
        assert decode(header) == msg
        assert len(json.dumps(header)) < limit  # as JSON text: 27 KB and 18 KB
    assert encode(verdict)["shares"]["1"] == {"ints": pack_ints(range(800, 1600))}
    assert encode(Vote(replica=1, quorum_id=2, step=3, ok=True, batch=(5, 9)))["batch"] == [5, 9]  # short: a list


def test_packed_integers_are_first_differences_zigzagged_at_the_narrowest_width():
    assert zlib.decompress(base64.b64decode(pack_ints([3, 4, 4, 2]).split(":")[1])) == bytes([6, 2, 0, 3])
    assert pack_ints([0, 300]).startswith("2:") and pack_ints([-(2**31), 2**31 - 1]).startswith("8:")
    for values in ((), (7,), (-(2**31), 2**31 - 1, 0), tuple(range(99, -1, -1))):
        assert unpack_ints(pack_ints(values)) == values


def test_packed_integers_that_do_not_unpack_are_refused_naming_the_field():
    header = encode(Vote(replica=1, quorum_id=2, step=3, ok=True, batch=tuple(range(64))))
    header["batch"] = {"ints": "2:not-base64!"}
    with pytest.raises(ProtocolError, match=r"vote\.batch: packed integers"):
        decode(header)


def test_only_the_first_sharer_sends_the_batch_the_leader_records():
    from tenacia.train.replicas.replica import vote_to_send

    vote = Vote(replica=2, quorum_id=7, step=41, ok=True, start=640, ids=(11, 12), batch=(10, 11, 12, 13))
    assert vote_to_send(vote, QUORUM) == dataclasses.replace(vote, batch=())  # sharers (0, 2): 2 is not first
    first = dataclasses.replace(vote, replica=0)
    assert vote_to_send(first, QUORUM) is first
