"""Every message the replicas exchange, as a typed value, and its one conversion to and from the wire.

Contract:
- A message is a frozen dataclass below; code outside this module never sees its wire form. Replica
  ids, steps, quorum ids and terms are ``int`` everywhere (JSON object keys are strings only on
  the wire: ``encode`` and ``decode`` convert them).
- ``encode(msg)`` gives the JSON-ready header ``wire.Conn`` sends (``{"type": TAG, field: ...}``);
  ``decode(header)`` gives the message back, or raises ``ProtocolError`` naming the message type,
  the field and what it expected (unknown type, missing or unknown field, wrong type). The wire is
  compatible only within one tenacia version (one install per run); nothing on disk uses it.
- The quorum knows its own next step (``Quorum.next_step``): whoever advances a quorum, leader or
  member, calls it, so the sharing rule is written once.

Who sends what. Control, member -> leader: ``Hello`` (first message of a connection), ``Heartbeat``, ``Vote``,
``Rechecked``, ``Bye``;
- leader -> member: ``Welcome``/``Retry``/``Redirect`` (answers to a hello), ``LeaderHeartbeat``,
  ``Quorum``, ``Verdict``, ``Recheck``, ``Wait``, ``Stop``, ``Expelled``; heal: ``HealRequest`` (newcomer),
  ``HealState`` (one blob) or ``HealError`` (donor).
Never sent: notices a replica's threads put in its training thread's inbox (``Wake``, ``LeaderLost``,
``Frozen``; ``Expelled`` also arrives from the leader).
"""

from __future__ import annotations

import sys
import typing
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from .codec import ProtocolError, from_json, to_json
from .shares import even_shares

# ----- parts of messages -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Addrs:
    """Where a member can be reached: its control server and its heal server (HOST:PORT)."""

    control: str
    heal: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """The fate of a step a previous quorum left undecided: apply it (``commit``) or drop it."""

    step: int
    commit: bool


# (name, dtype, shape, byte offset, byte count) of each tensor in a heal buffer (``heal.pack``)
LayoutEntry = tuple[str, str, tuple[int, ...], int, int]
Layout = tuple[LayoutEntry, ...]


# ----- control channel, member -> leader ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Vote:
    """A member's result for ``step`` of quorum ``quorum_id``: ``ok`` once its all-reduce (and heal)
    succeeded. ``start`` is the sampler position and ``batch`` the sample ids of the step's global
    batch (on the wire from the first sharer only, ``replica.vote_to_send``); ``ids`` the ones this
    member computed (its share), with their ``tokens`` and mean ``loss``; ``reused`` how many of
    them came from a discarded run of the same step; ``timing`` wall-clock phase times of a
    quorum's first step (``docs/events.md``), else None; ``checks``
    the values of the configured vote checks (``votecheck.py``), by check name. A mixture of
    experts adds ``expert_loads``, the tokens per expert and MoE layer summed over the quorum (the
    reduce's, alike on every member), and ``expert_bias``, the biases a commit sets from them.
    ``compute_s``: the seconds it spent computing its share, and evaluating since its last vote
    (the leader's speed measurements, ``speed.py``)."""

    TAG: ClassVar[str] = "vote"
    replica: int
    quorum_id: int
    step: int
    ok: bool
    start: int = 0
    ids: tuple[int, ...] = ()
    batch: tuple[int, ...] = ()
    tokens: int = 0
    loss: float = 0.0
    reused: int = 0
    timing: dict[str, float | None] | None = None
    checks: dict[str, Any] | None = None
    expert_loads: tuple[tuple[int, ...], ...] | None = None
    expert_bias: tuple[tuple[float, ...], ...] | None = None
    compute_s: float | None = None


@dataclass(frozen=True, slots=True)
class Hello:
    """A replica asks to join: where it listens, what it has committed, the step whose reduced
    gradients it holds awaiting a verdict (``pending``, with its vote), the newest quorum id it saw,
    and the members of the newest quorum it saw commit a step (``settled``, at ``settled_step``):
    the majority rule counts against the newest such set any live member knows. ``device`` names
    the chip it runs on (``host:slot``), for an eviction by name."""

    TAG: ClassVar[str] = "hello"
    replica: int
    control: str
    heal: str
    committed: int
    pending: int | None = None
    pending_vote: Vote | None = None
    quorum_seen: int = 0
    settled: tuple[int, ...] = ()
    settled_step: int = 0
    device: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A member is alive; it is in ``phase`` (idle, compute, allreduce, vote) of ``step``."""

    TAG: ClassVar[str] = "heartbeat"
    replica: int
    step: int
    phase: str
    committed: int
    pending: int | None = None


@dataclass(frozen=True, slots=True)
class Bye:
    """A member leaves cleanly (its run finished or it steps aside)."""

    TAG: ClassVar[str] = "bye"
    replica: int


@dataclass(frozen=True, slots=True)
class Rechecked:
    """The outcome of a re-execution the leader asked for (``Recheck``): the gradient
    fingerprint, loss and norm (``numerics.judge.Outcome``) of ``suspect``'s share of ``step``."""

    TAG: ClassVar[str] = "rechecked"
    replica: int
    quorum_id: int
    step: int
    suspect: int
    outcome: dict[str, Any]


# ----- control channel, leader -> member ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Welcome:
    """A hello was accepted by ``leader``, which leads term ``term``."""

    TAG: ClassVar[str] = "welcome"
    leader: int
    term: int


@dataclass(frozen=True, slots=True)
class Retry:
    """The replica asked has lost its leader too (or knows none): ask again shortly. ``committed``:
    the step it holds (a leaderless election goes to the lowest id among those holding the most)."""

    TAG: ClassVar[str] = "retry"
    replica: int
    term: int
    committed: int = 0


@dataclass(frozen=True, slots=True)
class Redirect:
    """The replica asked does not lead; the leader it knows listens at ``address``."""

    TAG: ClassVar[str] = "redirect"
    address: str


@dataclass(frozen=True, slots=True)
class LeaderHeartbeat:
    """The leader is alive (members fail over when it goes silent). ``hang_timeout``: its hang
    bound now, from the step times measured so far (members take it in place of the quorum's)."""

    TAG: ClassVar[str] = "leader_heartbeat"
    hang_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Quorum:
    """Who runs which step, with what share of the batch (``coordinator.py`` states the contract).

    ``members`` run ``step`` in the quorum's process group (rank = position in ``members``, group
    rendezvous on ``store``); ``sharers`` are those in sync, each computing ``shares[replica]``
    (positions in the global batch); ``heal`` maps each newcomer to its donor for this first step.
    ``resolve`` decides the step a previous quorum left pending; ``watch`` names replicas whose share
    a peer recomputes on every step up to the given step (``numeric_member.audit_plan``). ``hang_timeout`` is the leader's
    hang bound at formation (members use it to notice a silent leader, until a ``LeaderHeartbeat``
    brings a newer one). ``formed_t`` is the leader's
    wall clock at formation; ``received_t`` the member's, set on receipt (None at the leader)."""

    TAG: ClassVar[str] = "quorum"
    quorum_id: int
    term: int
    leader: int
    step: int
    members: tuple[int, ...]
    sharers: tuple[int, ...]
    shares: dict[int, tuple[int, ...]]
    heal: dict[int, int]
    store: str
    addrs: dict[int, Addrs]
    hang_timeout: float
    resolve: Resolve | None = None
    formed_t: float = 0.0
    received_t: float | None = None
    watch: dict[int, int] = field(default_factory=dict)

    def next_step(self, batch_size: int, shares: dict[int, tuple[int, ...]] | None = None) -> Quorum:
        """The same quorum one step on, after ``step`` committed: every member then holds the same
        state, so all share the batch and nobody heals (no new quorum, no new group); evenly,
        unless the commit's verdict sized the shares (``Verdict.shares``)."""
        return replace(self, step=self.step + 1, sharers=self.members, heal={}, resolve=None,
                       shares=shares or even_shares(self.members, batch_size))

    def rank(self, replica: int) -> int:
        return self.members.index(replica)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every member voted: apply ``step`` (``commit``) or drop it; ``skip``: drop it and its batch
    too (the numbers were right and the model or data unstable: the sampler moves past the batch).
    ``shares``: a commit's shares for the quorum's next step when the leader sized them to the
    members' speeds (``speed.py``), else None (even shares)."""

    TAG: ClassVar[str] = "verdict"
    quorum_id: int
    step: int
    commit: bool
    skip: bool = False
    shares: dict[int, tuple[int, ...]] | None = None


@dataclass(frozen=True, slots=True)
class Recheck:
    """Re-execute the share of ``share_of`` at ``step`` (its ``chunks`` of positions, in order) from
    the step's starting state, and answer ``Rechecked`` (asked: ``suspect`` and one healthy peer;
    ``share_of`` is the suspect itself unless the suspect is an auditor repeating its audit)."""

    TAG: ClassVar[str] = "recheck"
    quorum_id: int
    step: int
    suspect: int
    share_of: int
    chunks: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """Too few members for a quorum (``min_replicas``): hold, a new quorum will come."""

    TAG: ClassVar[str] = "wait"
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The run is over at ``step``: write the final state and exit."""

    TAG: ClassVar[str] = "stop"
    reason: str
    step: int


@dataclass(frozen=True, slots=True)
class Expelled:
    """This member must rejoin as a newcomer and heal (declared hung, or its leader was superseded);
    ``evict``: it must not: its device computes wrong numbers (the process exits, ``EXIT_EVICTED``)."""

    TAG: ClassVar[str] = "expelled"
    reason: str
    evict: bool = False


# ----- heal channel --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HealRequest:
    """A newcomer asks its donor for the state offered for quorum ``quorum_id``."""

    TAG: ClassVar[str] = "fetch"
    quorum_id: int


@dataclass(frozen=True, slots=True)
class HealState:
    """The donor's state, in the one blob that follows: tensors at the offsets of ``model`` and
    ``optim``; ``meta`` the trainer's counters as the donor offered them (step, sampler, ...)."""

    TAG: ClassVar[str] = "state"
    model: Layout
    optim: Layout
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealError:
    """The donor cannot serve the request."""

    TAG: ClassVar[str] = "heal_error"
    reason: str


# ----- notices inside one replica (never on the wire) ----------------------------------------------

@dataclass(frozen=True, slots=True)
class Wake:
    """Something the training thread waits on changed (a group, a fetch, a collective)."""


@dataclass(frozen=True, slots=True)
class LeaderLost:
    """The link to the leader broke (``why``) at ``at`` (monotonic seconds): fail over."""

    why: str
    at: float


@dataclass(frozen=True, slots=True)
class Frozen:
    """This process was stopped for ``gap_s`` seconds, longer than the hang bound: rejoin."""

    gap_s: float


Message = (Hello | Heartbeat | Vote | Bye | Rechecked | Welcome | Retry | Redirect | LeaderHeartbeat | Quorum
           | Verdict | Recheck | Wait | Stop | Expelled | HealRequest | HealState | HealError)
WIRE: dict[str, type] = {cls.TAG: cls for cls in typing.get_args(Message)}
Notice = Wake | LeaderLost | Frozen


# ----- the wire form ---------------------------------------------------------------------------------

def encode(msg: Message) -> dict[str, Any]:
    """``msg`` as a JSON-ready dict: ``type`` is its tag, int keys become strings, tuples lists."""
    tag = getattr(type(msg), "TAG", None)
    if WIRE.get(tag) is not type(msg):
        raise ProtocolError(f"{type(msg).__name__} is not a wire message")
    return {"type": tag, **to_json(msg, type(msg), _hints)}


def decode(header: dict[str, Any]) -> Message:
    """The message ``header`` encodes; ``ProtocolError`` naming the type and field if it is malformed."""
    if not isinstance(header, dict):
        raise ProtocolError(f"a message is a JSON object, not {type(header).__name__}")
    tag = header.get("type")
    cls = WIRE.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {tag!r}; known: {', '.join(sorted(WIRE))}")
    return from_json({k: v for k, v in header.items() if k != "type"}, cls, tag, _hints)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, vars(sys.modules[__name__]))
    return _HINTS[cls]
