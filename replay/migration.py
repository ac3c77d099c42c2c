"""Live migration of one session between backends: the partitioned epoch handoff (sans-IO).

Theory of operation
-------------------
A client connection is bound to a *source* backend at some epoch.  To move it to a *target* (DESIGN §5,
docs/protocol.md "Migration, as the proxy runs it"):

1. **prepare** — connect the target and ``attach`` it at ``epoch + 1`` with the *pre-copy*: the partitions
   in ``requires(target) ∩ present(session)`` as the proxy's store holds them.  The source keeps serving.
2. **quiesce** — the shell stops forwarding client frames at a frame boundary (it buffers what it already
   read and stops reading), and the source is fenced at ``epoch + 1``.  Requests already forwarded are
   still answered by the source until it reports ``fenced``.
3. **fenced** — the source reports ``last_seq`` (highest request applied) and any unreported deltas.
   Requests forwarded with ``seq > last_seq`` were not applied: they will be resent to the target.
4. **replay** — partitions of ``requires(target)`` whose version moved since the pre-copy (or that
   appeared) are sent with ``restore``: as a delta from the pre-copied version when the target
   advertised ``restore_deltas`` and the delta is smaller, else in full.  The digests the target
   reports (of whole partitions) must equal the store's.
5. **commit** — the route flips to the target, the unapplied requests are resent in order, buffered
   client frames are released, and the source is released.

The machine takes events (with ``now``) and returns actions; the shell owns sockets, buffering and the
store's durability.  The machine reads the store and applies the source's deltas to it, because every
delta must be in the store before the digest comparison.

Transitions (``PHASE x EVENT -> PHASE + actions``)::

    CONNECTING  TargetConnected           -> ATTACHING  SendTarget(Attach pre-copy)
    ATTACHING   Attached (digests ok)     -> FENCING    PauseClient, SendSource(Fence)
    FENCING     Res/Push from source      -> FENCING    DeliverToClient (deltas applied)
    FENCING     Fenced                    -> RESTORING  SendTarget(Restore changed) | commit at once
    RESTORING   Restored (digests ok)     -> COMMITTED  Commit, SendTarget(Req unapplied...),
                                                         ResumeClient, SendSource(Release), Finished
    before COMMITTED: TargetFailed | target Error | digest mismatch | Timeout
                                          -> ROLLED_BACK  CloseTarget, [re-attach fenced source at
                                             epoch + 2 and resend unapplied], ResumeClient, Finished
    before COMMITTED: SourceFailed        -> rebuild on the target from the store: unanswered requests
                                             get UnknownOutcome (or are resent when idempotent)
    any         ClientGone                -> ABORTED    CloseTarget, Finished

Guarantees: a client frame is applied exactly once (by the source if ``seq <= last_seq``, else by the
target), in order; no reply to a replayed frame reaches the client (``restore`` carries state, not
frames); state on the target equals the store's for every replayed partition (digest-checked).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from replay.canonical import canonical_packb
from replay.envelope import (
    RESTORE_DELTAS,
    Attach,
    Attached,
    Error,
    Fence,
    Fenced,
    Missing,
    Push,
    Release,
    Req,
    Res,
    Restore,
    Restored,
    RestoreDelta,
)
from replay.store.base import PartitionState, PartitionStore

EMPTY_PARTITION = PartitionState(0, {})

# Values of these exact types are equal exactly when their msgpack encodings are (not float: 0.0 and
# -0.0 are equal in Python, not on the wire; containers may hold either).
_EXACT = frozenset({str, int, bytes, bool, type(None)})
_ABSENT: Any = object()


def required_state(
    store: PartitionStore, sid: str, requires: Sequence[str]
) -> tuple[dict[str, PartitionState], int]:
    """``requires ∩ present`` as the store has them, plus every other required partition as an empty
    version 0 (docs/protocol.md): a backend then never has to ask for a partition it needs that the
    session does not have yet, which saves a ``missing`` round trip.  Also how many partitions the
    session has."""
    present = store.get_partition_list(sid)
    out = {}
    for name in requires:
        state = store.get_partition_data(sid, name) if name in present else None
        out[name] = state if state is not None else EMPTY_PARTITION
    return out, len(present)


def apply_deltas(store: PartitionStore, sid: str, deltas: Mapping[str, Any]) -> None:
    """Write a backend's reported deltas to the store (a full ``data`` replaces the partition).
    Raises ``StoreError`` for a delta the store refuses (a version that does not follow, bad data)."""
    for name, delta in deltas.items():
        if delta.data is not None:
            store.set_partition_data(sid, name, delta.data, version=delta.version)
        else:
            store.apply_delta(sid, name, delta.version, delta.set_, delta.delete)


def restore_delta(base: PartitionState, current: PartitionState) -> tuple[RestoreDelta, int] | None:
    """The ``restore`` delta that turns ``base`` (what the target holds) into ``current``, and its size
    (canonical msgpack of the delta as it goes on the wire); ``None`` when it would not be smaller than
    ``current`` sent in full (``current.canonical_size``), or when ``current`` is not newer.

    Values are compared as msgpack encodes them, so ``1`` -> ``True`` or ``0.0`` -> ``-0.0`` is a
    change; a value re-encoded with its nested maps in another order may be sent although equal,
    which costs bytes, never correctness (the target's digest of the whole partition is checked).
    Costs one dictionary lookup per key plus two ``packb`` per non-scalar value, and gives up as soon
    as the delta outgrows the full state.
    """
    if current.version <= base.version or not base.data:
        return None  # from nothing, a delta is the full state plus its overhead
    limit = current.canonical_size
    old = base.data
    new = current.data
    packb = msgpack.packb
    set_: dict[Any, Any] = {}
    added = 0
    # Bytes of the entries so far: a lower bound of the delta's size (plain msgpack of stored values
    # is as long as canonical msgpack), so giving up on it never drops a delta that would fit.
    size = 0
    for key, value in new.items():
        before = old.get(key, _ABSENT)
        kind = type(value)
        if kind is type(before) and kind in _EXACT:
            if before == value:
                continue
            packed = packb(value)
        else:
            packed = packb(value)
            if before is _ABSENT:
                added += 1
            elif packb(before) == packed:
                continue
        set_[key] = value
        size += len(packb(key)) + len(packed)
        if size >= limit:
            return None
    delete: list[Any] = []
    if len(new) - added < len(old):  # some key of the pre-copy is gone
        for key in old:
            if key not in new:
                delete.append(key)
                size += len(packb(key))
                if size >= limit:
                    return None
    delta = RestoreDelta(base.version, current.version, set_, tuple(delete))
    size = len(canonical_packb(delta.to_wire()))
    return (delta, size) if size < limit else None


class Phase(enum.Enum):
    CONNECTING = "connecting"
    ATTACHING = "attaching"
    FENCING = "fencing"
    RESTORING = "restoring"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


FINAL = frozenset({Phase.COMMITTED, Phase.ROLLED_BACK, Phase.ABORTED})

# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetConnected:
    pass


@dataclass(frozen=True, slots=True)
class TargetFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class SourceFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class FromTarget:
    envelope: Any


@dataclass(frozen=True, slots=True)
class FromSource:
    envelope: Any


@dataclass(frozen=True, slots=True)
class ClientGone:
    pass


@dataclass(frozen=True, slots=True)
class PhaseTimeout:
    pass


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    server: str


@dataclass(frozen=True, slots=True)
class SendTarget:
    envelope: Any


@dataclass(frozen=True, slots=True)
class SendSource:
    envelope: Any


@dataclass(frozen=True, slots=True)
class PauseClient:
    pass


@dataclass(frozen=True, slots=True)
class ResumeClient:
    pass


@dataclass(frozen=True, slots=True)
class DeliverToClient:
    body: bytes


@dataclass(frozen=True, slots=True)
class UnknownOutcome:
    seq: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Flip the route: from now on the target is the connection's backend, at ``epoch``.

    ``next_seq`` is the seq the target must see next.  Requests forwarded to the source after the
    pre-copy ``attach`` (the source kept serving) moved it past that ``attach``'s ``next_seq``; when
    they differ the shell re-attaches the target (same epoch, no state) with this value before it
    sends anything else.
    """

    server: str
    epoch: int
    next_seq: int


@dataclass(frozen=True, slots=True)
class CloseTarget:
    pass


@dataclass(frozen=True, slots=True)
class CloseSource:
    pass


@dataclass(frozen=True, slots=True)
class Finished:
    outcome: str  # committed | rolled_back | aborted
    cause: str | None
    report: MigrationReport


@dataclass
class MigrationReport:
    """What every migration measures (DESIGN §5).

    ``precopy_bytes[p]``: canonical msgpack size of partition ``p``'s data sent in the pre-copy
    ``attach`` (partitions at version 0 are not counted).  ``replay_bytes[p]``: what the replay's
    ``restore`` sent for ``p`` during the pause: the canonical size of the delta as it goes on the
    wire (``{"from", "v", "set", "del"}``) when a delta was sent, else of the full data.
    ``partitions_replayed``: partitions the target received (pre-copied or replayed).
    """

    source: str
    target: str
    started_s: float
    paused_s: float | None = None
    resumed_s: float | None = None
    precopy_bytes: dict[str, int] = field(default_factory=dict)
    replay_bytes: dict[str, int] = field(default_factory=dict)
    partitions_present: int = 0
    partitions_replayed: int = 0
    resent_requests: int = 0
    unknown_outcomes: int = 0
    source_lost: bool = False

    @property
    def pause_s(self) -> float | None:
        if self.paused_s is None or self.resumed_s is None:
            return None
        return self.resumed_s - self.paused_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "pause_s": self.pause_s,
            "precopy_bytes": dict(self.precopy_bytes),
            "replay_bytes": dict(self.replay_bytes),
            "partitions_present": self.partitions_present,
            "partitions_replayed": self.partitions_replayed,
            "resent_requests": self.resent_requests,
            "unknown_outcomes": self.unknown_outcomes,
            "source_lost": self.source_lost,
        }


class Migration:
    """One migration of session ``sid`` from ``source`` to ``target``.

    ``inflight`` is the shell's ordered map ``seq -> client frame`` of requests forwarded to the source
    and not yet answered; the machine removes entries as the source answers them during the handoff.
    ``idempotent(body)`` says whether a request may be resent blindly after the source died.
    ``requires_ack`` and ``client`` go on every ``attach`` the machine sends (docs/protocol.md).
    """

    def __init__(
        self,
        *,
        sid: str,
        epoch: int,
        source: str,
        target: str,
        source_requires: Sequence[str],
        target_requires: Sequence[str],
        store: PartitionStore,
        inflight: dict[int, bytes],
        next_seq: int,
        now_s: float,
        idempotent: Callable[[bytes], bool] = lambda body: False,
        requires_ack: bool = False,
        client: tuple[str, int] | None = None,
    ) -> None:
        self.sid = sid
        self.epoch = epoch
        self.new_epoch = epoch + 1
        self.source = source
        self.target = target
        self.source_requires = tuple(source_requires)
        self.target_requires = tuple(target_requires)
        self.store = store
        self.inflight = inflight
        self.next_seq = next_seq
        self.idempotent = idempotent
        self.requires_ack = requires_ack
        self.client = client
        self.phase = Phase.CONNECTING
        # What the pre-copy sent, to diff against at replay: the store's read-only view of each
        # partition (shared with the store's readers, never changed by later writes), not a copy.
        self.precopy: dict[str, PartitionState] = {}
        self.target_deltas = False  # the target advertised restore_deltas
        self.expected: dict[str, int] = {}  # partition -> digest the target must report
        self.source_fenced = False
        self.fenced_last_seq = 0
        self.seen_next_seq = next_seq  # one above the highest seq forwarded so far
        self.source_alive = True
        self.unapplied: list[tuple[int, bytes]] = []
        self.pending_rollback: str | None = None  # target failed while the fence was outstanding
        self.report = MigrationReport(source, target, now_s)

    # -- entry points ----------------------------------------------------------------------------

    def start(self) -> list[Any]:
        return [ConnectTarget(self.target)]

    def handle(self, event: Any, now_s: float) -> list[Any]:
        if self.phase in FINAL:
            return []
        kind = type(event)
        if kind is ClientGone:
            self.phase = Phase.ABORTED
            return [CloseTarget(), Finished("aborted", "client_gone", self.report)]
        if kind is PhaseTimeout:
            if self.phase is Phase.FENCING:
                # The source did not answer the fence in time: treat it as lost.
                if self.pending_rollback is not None:
                    self.source_alive = False
                    return self._rollback(self.pending_rollback, now_s)
                return self._source_lost(now_s)
            return self._rollback(f"timeout while {self.phase.value}", now_s)
        if kind is TargetFailed:
            return self._rollback(f"target failed: {event.reason}", now_s)
        if kind is SourceFailed:
            return self._source_lost(now_s)
        if kind is FromTarget:
            return self._from_target(event.envelope, now_s)
        if kind is FromSource:
            return self._from_source(event.envelope, now_s)
        if kind is TargetConnected and self.phase is Phase.CONNECTING:
            self.phase = Phase.ATTACHING
            return [SendTarget(self._attach(self.target_requires, self.new_epoch, precopy=True))]
        return []

    # -- internals -------------------------------------------------------------------------------

    def _partitions(self, requires: Sequence[str]) -> dict[str, PartitionState]:
        state, present = required_state(self.store, self.sid, requires)
        self.report.partitions_present = present
        return state

    def _attach(self, requires: Sequence[str], epoch: int, *, precopy: bool, next_seq: int | None = None) -> Attach:
        state = self._partitions(requires)
        for name, part in state.items():
            self.expected[name] = part.digest
            if precopy:
                self.precopy[name] = part
                if part.version:
                    self.report.precopy_bytes[name] = part.canonical_size
        return Attach(
            sid=self.sid,
            epoch=epoch,
            state=state,
            next_seq=self.next_seq if next_seq is None else next_seq,
            requires_ack=self.requires_ack,
            client=self.client,
        )

    def _digests_ok(self, digests: Mapping[str, int]) -> bool:
        return all(digests.get(name) == digest for name, digest in self.expected.items())

    def _from_target(self, env: Any, now_s: float) -> list[Any]:
        kind = type(env)
        if kind is Error:
            return self._rollback(f"target error: {env.code}", now_s)
        if kind is Attached and self.phase is Phase.ATTACHING:
            if not self._digests_ok(env.digests):
                return self._rollback("digest mismatch after pre-copy", now_s)
            self.target_deltas = RESTORE_DELTAS in env.features
            if not self.source_alive:
                return self._rebuild(now_s)
            self.phase = Phase.FENCING
            self.report.paused_s = now_s
            return [PauseClient(), SendSource(Fence(epoch=self.new_epoch))]
        if kind is Restored and self.phase is Phase.RESTORING:
            if not self._digests_ok(env.digests):
                return self._rollback("digest mismatch after replay", now_s)
            return self._commit(now_s)
        return []

    def _from_source(self, env: Any, now_s: float) -> list[Any]:
        kind = type(env)
        if kind is Res:
            self.inflight.pop(env.seq, None)
            if env.seq >= self.seen_next_seq:
                self.seen_next_seq = env.seq + 1  # answered here: the target's next seq is past it
            if env.deltas:
                apply_deltas(self.store, self.sid, env.deltas)
            return [] if env.body is None else [DeliverToClient(env.body)]
        if kind is Push:
            if env.deltas:
                apply_deltas(self.store, self.sid, env.deltas)
            return [DeliverToClient(env.body)]
        if kind is Fenced and self.phase is Phase.FENCING:
            self.source_fenced = True
            self.fenced_last_seq = env.last_seq
            if env.deltas:
                apply_deltas(self.store, self.sid, env.deltas)
            self.unapplied = [(seq, body) for seq, body in sorted(self.inflight.items()) if seq > env.last_seq]
            if self.pending_rollback is not None:
                return self._rollback(self.pending_rollback, now_s)
            return self._replay(now_s)
        if kind is Missing:
            # The source could not apply a request for lack of a partition: it will be resent after
            # the handoff like any unapplied request.
            return []
        if kind is Error:
            return self._source_lost(now_s)
        return []

    def _replay(self, now_s: float) -> list[Any]:
        restore = self._replay_restore()
        if restore is None:
            return self._commit(now_s)
        self.phase = Phase.RESTORING
        return [SendTarget(restore)]

    def _replay_restore(self) -> Restore | None:
        """The ``restore`` of every target partition whose version moved since the pre-copy (``None``
        if none did): a delta from the pre-copied version where the target takes deltas and the delta
        is smaller, the full state otherwise.  Sets the digests the target must then report."""
        full: dict[str, PartitionState] = {}
        deltas: dict[str, RestoreDelta] = {}
        for name, state in self._partitions(self.target_requires).items():
            base = self.precopy.get(name)
            if base is not None and base.version == state.version:
                continue
            self.expected[name] = state.digest
            found = restore_delta(base, state) if self.target_deltas and base is not None else None
            if found is not None:
                deltas[name], self.report.replay_bytes[name] = found
            else:
                full[name] = state
                self.report.replay_bytes[name] = state.canonical_size
        replayed = {n for n, p in self.precopy.items() if p.version} | set(full) | set(deltas)
        self.report.partitions_replayed = len(replayed)
        if not full and not deltas:
            return None
        return Restore(epoch=self.new_epoch, state=full, deltas=deltas)

    def _unapplied_now(self) -> None:
        """Recompute what the fenced source did not apply from everything in flight now, so that a
        request forwarded after ``fenced`` (which a fenced source drops) is resent, never lost."""
        if self.source_fenced:
            self.unapplied = [(seq, body) for seq, body in sorted(self.inflight.items()) if seq > self.fenced_last_seq]

    def _commit(self, now_s: float) -> list[Any]:
        self._unapplied_now()
        self.phase = Phase.COMMITTED
        self.report.resumed_s = now_s
        if self.report.paused_s is None:
            self.report.paused_s = now_s
        if self.unapplied:
            next_seq = self.unapplied[0][0]
        else:
            # Everything forwarded was applied by the source (or reported as of unknown outcome).
            next_seq = max(self.seen_next_seq, self.fenced_last_seq + 1, max(self.inflight, default=0) + 1)
        actions: list[Any] = [Commit(self.target, self.new_epoch, next_seq)]
        for seq, body in self.unapplied:
            actions.append(SendTarget(Req(seq=seq, body=body)))
            self.report.resent_requests += 1
        # The resent requests stay in flight, now on the target; the rest of inflight was answered.
        self.inflight.clear()
        self.inflight.update(self.unapplied)
        actions.append(ResumeClient())
        if self.source_alive:
            actions.append(SendSource(Release(epoch=self.new_epoch)))
        actions.append(CloseSource())
        actions.append(Finished("committed", None, self.report))
        return actions

    def _rollback(self, cause: str, now_s: float) -> list[Any]:
        if not self.source_alive:
            # Nowhere to go back to: the session is lost with its backends; the client is told.
            self.phase = Phase.ABORTED
            return [CloseTarget(), Finished("aborted", f"{cause}; source already lost", self.report)]
        if self.phase is Phase.FENCING and not self.source_fenced:
            # Which requests the source applied is known only from its ``fenced``: wait for it, then
            # roll back with exact knowledge.  The target can go now.
            first = self.pending_rollback is None
            self.pending_rollback = self.pending_rollback or cause
            return [CloseTarget()] if first else []
        self._unapplied_now()
        self.phase = Phase.ROLLED_BACK
        actions: list[Any] = [] if self.pending_rollback is not None else [CloseTarget()]
        if self.source_fenced:
            # The fenced source applies nothing more on this epoch: bind it again above the target's
            # epoch with the store's copy (equal to its own: every delta was applied above), then give
            # it back the requests it never applied.
            reattach = self._attach(
                self.source_requires, self.new_epoch + 1, precopy=False, next_seq=self.fenced_last_seq + 1
            )
            actions.append(SendSource(reattach))
            for seq, body in self.unapplied:
                actions.append(SendSource(Req(seq=seq, body=body)))
            self.inflight.clear()
            self.inflight.update(self.unapplied)
        if self.report.paused_s is not None:
            self.report.resumed_s = now_s
            actions.append(ResumeClient())
        actions.append(Finished("rolled_back", cause, self.report))
        return actions

    def _source_lost(self, now_s: float) -> list[Any]:
        self.source_alive = False
        self.report.source_lost = True
        if self.pending_rollback is not None:
            return self._rollback(self.pending_rollback, now_s)  # neither side left: abort
        if self.source_fenced:
            return []  # it already said exactly what it applied: the handoff needs nothing more from it
        if self.phase is Phase.ATTACHING or self.phase is Phase.CONNECTING:
            return []  # continue; rebuild once the target is attached
        return self._rebuild(now_s)

    def _rebuild(self, now_s: float) -> list[Any]:
        """The source is gone: finish on the target from the store alone (DESIGN §5)."""
        actions: list[Any] = []
        if self.report.paused_s is None:
            self.report.paused_s = now_s
            actions.append(PauseClient())
        self.seen_next_seq = max(self.seen_next_seq, max(self.inflight, default=0) + 1)
        # Replies reach the client in request order and the target takes consecutive seqs, so only
        # the idempotent requests after the last one that is not can be resent: that one and every
        # request before it are answered "unknown outcome" now, ahead of the resent ones' replies.
        ordered = sorted(self.inflight.items())
        cut = 0
        for i, (_, body) in enumerate(ordered):
            if not self.idempotent(body):
                cut = i + 1
        for seq, _ in ordered[:cut]:
            actions.append(UnknownOutcome(seq))
            self.report.unknown_outcomes += 1
        self.unapplied = ordered[cut:]
        self.inflight.clear()
        restore = self._replay_restore()
        if restore is not None:
            self.phase = Phase.RESTORING
            actions.append(SendTarget(restore))
            return actions
        return actions + self._commit(now_s)
