"""The ``plain`` backend dialect (sans-IO): record client frames by rules, replay them on migration.

A plain backend is an unmodified server: it reads the client's frames and writes replies, and knows
nothing of sessions, sequence numbers or partitions.  To move such a connection the proxy must rebuild
the server-side session on the target by itself, so it *records* the client frames that change session
state and *replays* them (DESIGN.md section 4; docs/plain.md has the operator's view).

Theory of operation
-------------------
1. **Rules** (:class:`Rule`, :class:`RuleSet`) classify each client frame, decoded as a msgpack map, by
   field equality (``{"op": "login"}``).  The first rule whose conditions all hold names the frame's
   *partition*, its compaction mode and how many server frames (``replies``) it produces.  Frames that
   match no rule, or are not a msgpack map, are not recorded.
2. The **recorder** (:class:`Recorder`, one per session) keeps the recorded frames per partition,
   compacted: ``last`` keeps the newest frame of the partition, ``last-by-key`` the newest frame per
   value of a key field, ``log`` every frame.  Every partition is bounded in frames and bytes; what
   happens past the bound is the partition's ``overflow`` policy.  Each recorded frame carries a
   per-session sequence number, so frames of several partitions replay in the order the client sent
   them (a login before a join); a frame that replaces an older one takes the older one's place, so a
   second login still replays before the join that followed the first.
3. The **migration** (:class:`PlainMigration`) quiesces and replays::

       start                    -> PauseClient, ConnectTarget             (QUIESCING or CONNECTING)
       QUIESCING  SourceReply   -> DeliverToClient; outstanding -= 1;  at 0: CONNECTING
       CONNECTING TargetConnected, greeting swallowed, outstanding == 0
                                -> REPLAYING  SendTarget(frame 1)
       REPLAYING  TargetReply   -> swallowed; after ``replies`` of them SendTarget(next frame)
                  (a frame with ``replies: 0`` is followed by the next one at once)
       REPLAYING  last reply    -> COMMITTED  Commit, ReleaseClientFrames, ResumeClient, CloseSource,
                  (or last frame sent,        Finished("committed")
                   if it has replies: 0)
       any phase  ClientFrame   -> buffered   (StopReadingClient once past max_buffered_bytes)
       before COMMITTED: TargetFailed | unexpected target frame | deadline passed
                                -> ROLLED_BACK  CloseTarget, ReleaseClientFrames, ResumeClient,
                                                Finished("rolled_back")
       before COMMITTED: SourceFailed
                                -> RepliesLost(outstanding); continue on the target alone
                                   (a later failure then ends in ABORTED)
       any phase  ClientGone    -> ABORTED     CloseTarget, Finished("aborted")
       start with a required partition overflowed
                                -> DEFERRED    Finished("deferred") (nothing paused)

   The source never stops holding the session: until ``Commit`` it has seen every forwarded frame and
   nothing was taken from it, so rolling back is only resuming the client.

Warnings
--------
- Reply counting is the only synchronisation this dialect has.  A server that sends frames nobody
  asked for (pushes, keep-alives, a different number of replies than ``replies`` says) shifts the
  count: quiesce may end early or late, and a replayed frame's reply may reach the client.
- Replaying a frame re-runs its side effects on the target (a login is logged twice), and closing the
  source looks to it like the client leaving.  Nothing checks that the target's state equals the
  source's: there is no digest in this dialect.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from replay.canonical import canonical_packb
from replay.migration import (  # the events and actions both machines share
    ClientGone,
    CloseSource,
    CloseTarget,
    ConnectTarget,
    DeliverToClient,
    PauseClient,
    ResumeClient,
    SourceFailed,
    TargetConnected,
    TargetFailed,
)
from replay.store.base import InvalidName, StoreLimits, validate_partition_name

__all__ = [
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_MAX_FRAMES",
    "FINAL",
    "OVERFLOWED_KEY",
    "Classified",
    "ClientFrame",
    "ClientGone",
    "CloseSource",
    "CloseTarget",
    "Commit",
    "Compaction",
    "Condition",
    "ConnectTarget",
    "DeliverToClient",
    "Finished",
    "Overflow",
    "PartitionOverflowed",
    "PartitionPolicy",
    "PauseClient",
    "Phase",
    "PlainMigration",
    "PlainMigrationReport",
    "Problem",
    "Recorder",
    "ReleaseClientFrames",
    "RepliesLost",
    "ResumeClient",
    "Rule",
    "RuleError",
    "RuleSet",
    "SendTarget",
    "SourceFailed",
    "SourceReply",
    "StopReadingClient",
    "TargetConnected",
    "TargetFailed",
    "TargetReply",
    "Tick",
]

# Defaults chosen so that a full partition, stored as ``{seq: frame}`` (about 14 bytes of msgpack
# overhead per frame), stays under the partition store's default max_partition_bytes (256 KiB).
DEFAULT_LOG_MAX_FRAMES = 1024
DEFAULT_LOG_MAX_BYTES = 128 * 1024

# The store key that marks a partition whose frames were lost to an overflow (docs/plain.md).
OVERFLOWED_KEY = "overflowed"

_NAME_LIMITS = StoreLimits()


# == rules =========================================================================================


class Compaction(enum.Enum):
    LAST = "last"
    LOG = "log"
    LAST_BY_KEY = "last-by-key"


class Overflow(enum.Enum):
    """What a partition does when a new frame would break ``max_frames`` or ``max_bytes``."""

    FAIL = "fail"  # drop the partition's frames, mark it overflowed: migrations that need it are deferred
    DROP_OLDEST = "drop_oldest"  # evict the oldest frames of the partition until the new one fits


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem: where (a path relative to the rule list) and what."""

    loc: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.loc)
        return f"{where}: {self.message}" if where else self.message


class RuleError(ValueError):
    """Invalid rules; ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def _encode(value: Any) -> bytes | None:
    """Canonical msgpack of a field value, or None when it has no canonical form."""
    try:
        return canonical_packb(value)
    except (TypeError, ValueError, RecursionError):
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    """``name == value``: the frame, decoded as a msgpack map, has field ``name`` equal to ``value``.

    Equality is of msgpack values, type included: ``1`` matches the integer 1, not ``1.0`` nor
    ``true``; a str matches a msgpack str, bytes a msgpack bin.  Values may be arrays or maps too
    (compared in canonical form, so key order does not matter).
    """

    name: str
    value: Any
    encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.name) is not str or not self.name:
            raise RuleError(
                [Problem(("match",), f"a field name must be a non-empty string, not {self.name!r}")]
            )
        encoded = _encode(self.value)
        if encoded is None:
            raise RuleError(
                [
                    Problem(
                        ("match", self.name), f"value {self.value!r} cannot be compared with msgpack values"
                    )
                ]
            )
        object.__setattr__(self, "encoded", encoded)


def _nonneg_int(value: Any) -> bool:
    return type(value) is int and value >= 0


@dataclass(frozen=True, slots=True)
class Rule:
    """Frames matching every condition of ``match`` belong to ``partition``.

    ``compaction`` says which of them the partition keeps (``key`` names the field for
    ``last-by-key``); ``replies`` is how many server frames each such frame produces (0 for a frame
    the server never answers).  ``max_frames``, ``max_bytes`` and ``overflow`` bound the partition;
    ``None`` takes the default (or the value another rule of the same partition gives).
    """

    match: tuple[Condition, ...]
    partition: str
    compaction: Compaction = Compaction.LOG
    key: str | None = None
    replies: int = 1
    max_frames: int | None = None
    max_bytes: int | None = None
    overflow: Overflow | None = None

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if isinstance(self.match, Mapping):
            conditions: list[Condition] = []
            for name, value in self.match.items():
                try:
                    conditions.append(Condition(name, value))
                except RuleError as exc:
                    problems.extend(exc.problems)
            object.__setattr__(self, "match", tuple(conditions))
        elif isinstance(self.match, list | tuple) and all(isinstance(c, Condition) for c in self.match):
            object.__setattr__(self, "match", tuple(self.match))
        else:
            problems.append(Problem(("match",), "must be a mapping of field: value"))
        if not problems and not self.match:
            problems.append(Problem(("match",), "needs at least one field: value condition"))
        fields = [c.name for c in self.match] if not problems else []
        if len(set(fields)) != len(fields):
            problems.append(Problem(("match",), "names the same field twice"))
        try:
            validate_partition_name(self.partition, _NAME_LIMITS)
        except InvalidName as exc:
            problems.append(Problem(("partition",), str(exc)))
        if not isinstance(self.compaction, Compaction):
            try:
                object.__setattr__(self, "compaction", Compaction(self.compaction))
            except ValueError:
                problems.append(
                    Problem(
                        ("compaction",), f"must be one of last, log, last-by-key, not {self.compaction!r}"
                    )
                )
        if not isinstance(self.compaction, Compaction):
            pass  # reported above; whether a key belongs here is unknown
        elif self.compaction is Compaction.LAST_BY_KEY:
            if type(self.key) is not str or not self.key:
                problems.append(Problem(("key",), "last-by-key needs the name of the key field"))
        elif self.key is not None:
            problems.append(Problem(("key",), "only last-by-key takes a key field"))
        if not _nonneg_int(self.replies):
            problems.append(Problem(("replies",), f"must be an integer >= 0, not {self.replies!r}"))
        for name in ("max_frames", "max_bytes"):
            value = getattr(self, name)
            if value is not None and not (type(value) is int and value >= 1):
                problems.append(Problem((name,), f"must be an integer >= 1, not {value!r}"))
        if self.overflow is not None and not isinstance(self.overflow, Overflow):
            try:
                object.__setattr__(self, "overflow", Overflow(self.overflow))
            except ValueError:
                problems.append(Problem(("overflow",), f"must be fail or drop_oldest, not {self.overflow!r}"))
        if problems:
            raise RuleError(problems)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Rule:
        """Build a rule from its YAML form (docs/plain.md); unknown keys are refused."""
        known = {"match", "partition", "compaction", "key", "replies", "max_frames", "max_bytes", "overflow"}
        if not isinstance(data, Mapping):
            raise RuleError([Problem((), "a rule must be a mapping")])
        problems = [Problem((k,), "unknown key") for k in data if k not in known]
        missing = [Problem((k,), "is required") for k in ("match", "partition") if k not in data]
        if missing:
            raise RuleError(problems + missing)
        try:
            rule = cls(**{k: data[k] for k in known if k in data})
        except RuleError as exc:
            raise RuleError(problems + list(exc.problems)) from None
        if problems:
            raise RuleError(problems)
        return rule

    def matches(self, fields: Mapping[Any, Any], cache: dict[str, bytes | None]) -> bool:
        for cond in self.match:
            if cond.name not in fields:
                return False
            encoded = cache.get(cond.name, b"")
            if encoded == b"":  # canonical msgpack is never empty: b"" means "not computed yet"
                encoded = cache[cond.name] = _encode(fields[cond.name])
            if encoded != cond.encoded:
                return False
        return True


@dataclass(frozen=True, slots=True)
class PartitionPolicy:
    """How one partition compacts and bounds its frames (merged from the rules that name it)."""

    name: str
    compaction: Compaction
    key: str | None
    max_frames: int
    max_bytes: int
    overflow: Overflow


@dataclass(frozen=True, slots=True)
class Classified:
    """The outcome of matching one client frame: its rule (None: not recorded) and compaction slot."""

    rule: Rule | None
    slot: Any
    replies: int


class RuleSet:
    """An ordered list of rules; the first whose conditions all hold wins.

    ``default_replies`` is how many server frames a frame that matches no rule produces (for the
    shell's count of outstanding replies; such frames are not recorded).  Rules naming the same
    partition must agree on its compaction and key, and on any limit more than one of them sets.
    """

    def __init__(self, rules: Iterable[Rule] = (), *, default_replies: int = 1) -> None:
        self.rules = tuple(rules)
        problems: list[Problem] = []
        if not _nonneg_int(default_replies):
            problems.append(
                Problem(("default_replies",), f"must be an integer >= 0, not {default_replies!r}")
            )
        self.default_replies = default_replies
        self.policies: dict[str, PartitionPolicy] = {}
        first: dict[str, int] = {}
        given: dict[tuple[str, str], tuple[int, Any]] = {}
        for i, rule in enumerate(self.rules):
            if not isinstance(rule, Rule):
                problems.append(Problem((i,), "is not a Rule"))
                continue
            j = first.setdefault(rule.partition, i)
            base = self.rules[j]
            for attr in ("compaction", "key"):
                if getattr(rule, attr) != getattr(base, attr):
                    problems.append(
                        Problem(
                            (i, attr),
                            f"partition {rule.partition!r} is {_show(getattr(base, attr))} in rule {j}, "
                            f"{_show(getattr(rule, attr))} here: rules of one partition must agree",
                        )
                    )
            for attr in ("max_frames", "max_bytes", "overflow"):
                value = getattr(rule, attr)
                if value is None:
                    continue
                seen = given.setdefault((rule.partition, attr), (i, value))
                if seen[1] != value:
                    problems.append(
                        Problem(
                            (i, attr),
                            f"partition {rule.partition!r} has {attr} {_show(seen[1])} in rule {seen[0]}, "
                            f"{_show(value)} here",
                        )
                    )
        if problems:
            raise RuleError(problems)
        for name, j in first.items():
            base = self.rules[j]
            max_frames = given.get((name, "max_frames"), (j, DEFAULT_LOG_MAX_FRAMES))[1]
            self.policies[name] = PartitionPolicy(
                name=name,
                compaction=base.compaction,
                key=base.key,
                max_frames=1 if base.compaction is Compaction.LAST else max_frames,
                max_bytes=given.get((name, "max_bytes"), (j, DEFAULT_LOG_MAX_BYTES))[1],
                overflow=given.get((name, "overflow"), (j, Overflow.FAIL))[1],
            )

    @classmethod
    def from_config(cls, rules: Any, *, default_replies: int = 1) -> RuleSet:
        """Build from the YAML list of rule mappings; every problem is reported, located by the rule's
        index (``Problem.loc`` starts with it, e.g. ``(2, "key")``)."""
        if rules is None:
            rules = []
        if not isinstance(rules, list | tuple):
            raise RuleError([Problem((), "plain rules must be a list of mappings")])
        built: list[Rule] = []
        problems: list[Problem] = []
        for i, data in enumerate(rules):
            try:
                built.append(Rule.from_mapping(data))
            except RuleError as exc:
                problems.extend(Problem((i, *p.loc), p.message) for p in exc.problems)
            except TypeError as exc:
                problems.append(Problem((i,), str(exc)))
        if problems:
            raise RuleError(problems)
        try:
            return cls(built, default_replies=default_replies)
        except RuleError as exc:
            raise RuleError(exc.problems) from None

    def classify(self, body: bytes) -> Classified:
        """Match one client frame.  A frame that is not exactly one msgpack map matches nothing."""
        fields = _decode_map(body)
        if fields is not None:
            cache: dict[str, bytes | None] = {}
            for rule in self.rules:
                if rule.matches(fields, cache):
                    slot: Any = None
                    if rule.compaction is Compaction.LAST:
                        slot = ()
                    elif rule.compaction is Compaction.LAST_BY_KEY:
                        # Frames without the key field (or with a value that has no msgpack form)
                        # share one slot, keyed b"" (never a canonical encoding).
                        key = rule.key
                        slot = (_encode(fields[key]) or b"") if key in fields else b""
                    return Classified(rule, slot, rule.replies)
        return Classified(None, None, self.default_replies)

    def expected_replies(self, body: bytes) -> int:
        """How many server frames forwarding ``body`` should produce."""
        return self.classify(body).replies


def _show(value: Any) -> str:
    return repr(value.value) if isinstance(value, enum.Enum) else repr(value)


def _decode_map(body: bytes) -> Mapping[Any, Any] | None:
    # The body is bounded by the listener's max_frame_bytes, so decoding it is bounded work.
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:  # any malformed, truncated, non-UTF-8 or unhashable-key frame: just not a map
        return None
    return obj if isinstance(obj, dict) else None


# == recorder ======================================================================================


class PartitionOverflowed(Exception):
    """A replay needs a partition that lost frames to its overflow policy."""

    def __init__(self, partitions: Iterable[str]) -> None:
        self.partitions = tuple(sorted(partitions))
        super().__init__(
            "partition_overflowed: " + ", ".join(repr(p) for p in self.partitions) + " lost recorded frames"
        )


@dataclass(slots=True)
class _Entry:
    partition: str
    body: bytes
    replies: int
    slot: Any


class _Partition:
    __slots__ = ("entries", "nbytes", "overflowed", "policy", "slots")

    def __init__(self, policy: PartitionPolicy) -> None:
        self.policy = policy
        self.entries: dict[int, _Entry] = {}  # seq -> entry; insertion order is seq order
        self.slots: dict[Any, int] = {}  # compaction slot -> seq
        self.nbytes = 0
        self.overflowed = False

    def remove(self, seq: int) -> None:
        entry = self.entries.pop(seq)
        self.nbytes -= len(entry.body)
        if entry.slot is not None and self.slots.get(entry.slot) == seq:
            del self.slots[entry.slot]

    def clear(self) -> None:
        self.entries.clear()
        self.slots.clear()
        self.nbytes = 0


class Recorder:
    """The recorded frames of one session, per partition, compacted and bounded.

    Not thread-safe; one owner (the connection's shell).
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._parts: dict[str, _Partition] = {}
        self._next_seq = 1
        self._changed: set[str] = set()

    # -- recording -----------------------------------------------------------------------------------

    def observe(self, body: bytes) -> tuple[str | None, int]:
        """Record ``body`` if a rule says so; return ``(partition or None, expected replies)``.

        One decode serves both answers: the shell calls this for every client frame it forwards.
        """
        c = self.rules.classify(body)
        if c.rule is None:
            return None, c.replies
        self._add(self._next_seq, c.rule.partition, bytes(body), c.replies, c.slot)
        self._next_seq += 1
        return c.rule.partition, c.replies

    def record(self, body: bytes) -> str | None:
        """Record ``body`` if a rule says so; return its partition (None: not recorded)."""
        return self.observe(body)[0]

    def _part(self, name: str) -> _Partition:
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = _Partition(self.rules.policies[name])
        return part

    def _add(self, seq: int, partition: str, body: bytes, replies: int, slot: Any) -> None:
        part = self._part(partition)
        policy = part.policy
        self._changed.add(partition)
        if part.overflowed:
            if policy.compaction is not Compaction.LAST:
                return  # lost frames cannot be recovered: the partition stays overflowed
            part.overflowed = False  # the newest frame of a `last` partition is all it needs
        # A frame that replaces an older one of its slot takes that frame's place in the replay order:
        # a client that logs in again after joining a room must still replay the login first.
        replacing = slot is not None and slot in part.slots
        if replacing:
            seq = part.slots[slot]
            part.nbytes -= len(part.entries[seq].body)
        size = len(body)
        if size > policy.max_bytes:
            self._overflow(part)  # cannot fit even alone, whatever the policy
            return
        while (
            not replacing and len(part.entries) >= policy.max_frames
        ) or part.nbytes + size > policy.max_bytes:
            if policy.overflow is Overflow.FAIL:
                self._overflow(part)
                return
            # Evict the oldest other frame (dict order is replay order: replacements keep their place).
            part.remove(next(s for s in part.entries if s != seq))
        part.entries[seq] = _Entry(partition, body, replies, slot)
        part.nbytes += size
        if slot is not None:
            part.slots[slot] = seq

    @staticmethod
    def _overflow(part: _Partition) -> None:
        part.clear()  # the frames are useless now and would only hold memory
        part.overflowed = True

    # -- reading -------------------------------------------------------------------------------------

    def partitions(self) -> list[str]:
        """Partitions holding at least one frame, or marked overflowed, sorted."""
        return sorted(n for n, p in self._parts.items() if p.entries or p.overflowed)

    def overflowed(self) -> frozenset[str]:
        return frozenset(n for n, p in self._parts.items() if p.overflowed)

    def frames_for(self, requires: Iterable[str]) -> list[tuple[str, bytes, int]]:
        """``(partition, body, replies)`` of ``requires ∩ present``, in the order the client sent them.

        Raises :class:`PartitionOverflowed` if a required partition lost frames.
        """
        wanted = [self._parts[n] for n in dict.fromkeys(requires) if n in self._parts]
        lost = [p.policy.name for p in wanted if p.overflowed]
        if lost:
            raise PartitionOverflowed(lost)
        entries = [(seq, e) for p in wanted for seq, e in p.entries.items()]
        entries.sort(key=_seq_of)
        return [(e.partition, e.body, e.replies) for _, e in entries]

    def bytes_per_partition(self) -> dict[str, int]:
        """Bytes of recorded frame bodies per present partition."""
        return {n: p.nbytes for n, p in self._parts.items() if p.entries}

    def frames_per_partition(self) -> dict[str, int]:
        return {n: len(p.entries) for n, p in self._parts.items() if p.entries}

    # -- persistence ---------------------------------------------------------------------------------

    def take_changed(self) -> set[str]:
        """Partitions changed since the last call (to write back to the partition store)."""
        changed, self._changed = self._changed, set()
        return changed

    def partition_state(self, name: str) -> dict[Any, Any]:
        """One partition as partition-store data: ``{seq: frame bytes}``, plus ``"overflowed": True``
        when it lost frames.  An absent partition is ``{}`` (the shell may delete it)."""
        part = self._parts.get(name)
        if part is None:
            return {}
        data: dict[Any, Any] = {seq: e.body for seq, e in part.entries.items()}
        if part.overflowed:
            data[OVERFLOWED_KEY] = True
        return data

    def state(self) -> dict[str, dict[Any, Any]]:
        """Every present partition, as :meth:`partition_state` gives it."""
        return {name: self.partition_state(name) for name in self.partitions()}

    def load(self, state: Mapping[str, Mapping[Any, Any]]) -> int:
        """Replace the recorded frames with ``state`` (as :meth:`state` or the store returns it).

        The frames are classified again, in sequence order, by the *current* rules (they may have been
        reloaded since): a frame the current rules do not put in the partition it was stored under is
        dropped.  Returns how many frames were dropped.  An overflow mark is kept if the partition
        still exists in the rules.  Entries that are not ``int -> bytes`` are ignored (and counted).
        """
        self._parts.clear()
        self._changed = set()
        frames: list[tuple[int, str, bytes]] = []
        dropped = 0
        for name, data in state.items():
            if not isinstance(data, Mapping):
                dropped += 1
                continue
            for key, value in data.items():
                if key == OVERFLOWED_KEY and type(key) is str:
                    if value is True and name in self.rules.policies:
                        self._part(name).overflowed = True
                elif type(key) is int and key >= 1 and isinstance(value, bytes | bytearray):
                    frames.append((key, name, bytes(value)))
                else:
                    dropped += 1
        frames.sort(key=_first)
        for seq, name, body in frames:
            c = self.rules.classify(body)
            if c.rule is None or c.rule.partition != name:
                dropped += 1
                continue
            self._add(seq, name, body, c.replies, c.slot)
        self._next_seq = max((f[0] for f in frames), default=0) + 1
        # Only what classification changed needs writing back to the store.
        self._changed = {n for n, data in state.items() if self.partition_state(n) != data}
        return dropped


def _seq_of(item: tuple[int, _Entry]) -> int:
    return item[0]


def _first(item: tuple[int, str, bytes]) -> int:
    return item[0]


# == migration machine =============================================================================


class Phase(enum.Enum):
    QUIESCING = "quiescing"  # client paused; waiting for replies to frames already forwarded
    CONNECTING = "connecting"  # nothing outstanding; waiting for the target (and its greeting)
    REPLAYING = "replaying"  # sending recorded frames and swallowing their replies
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    DEFERRED = "deferred"


FINAL = frozenset({Phase.COMMITTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.DEFERRED})


# -- events -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """A client frame read while the migration runs (it is buffered, not forwarded)."""

    body: bytes


@dataclass(frozen=True, slots=True)
class SourceReply:
    """A frame from the source server."""

    body: bytes


@dataclass(frozen=True, slots=True)
class TargetReply:
    """A frame from the target server."""

    body: bytes


@dataclass(frozen=True, slots=True)
class Tick:
    """Nothing happened; lets the machine notice a passed deadline (see ``deadline_s``)."""


# -- actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StopReadingClient:
    """The buffer of client frames is full: stop reading the client socket (TCP backpressure)."""


@dataclass(frozen=True, slots=True)
class SendTarget:
    """Write one replayed frame body to the target (the shell adds the length prefix)."""

    partition: str
    body: bytes


@dataclass(frozen=True, slots=True)
class RepliesLost:
    """The source died owing ``count`` replies: they will never come (the shell tells the client as its
    policy says, e.g. ``unknown_outcome`` error frames)."""

    count: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Flip the route: the target is now the connection's server; it owes no replies (every reply to a
    replayed frame was swallowed), so the shell's count of outstanding replies restarts at 0."""

    server: str


@dataclass(frozen=True, slots=True)
class ReleaseClientFrames:
    """Forward these buffered client frames, in order, through the normal path (record them, count
    their expected replies) to the connection's current server: the target after ``Commit``, the
    source after a rollback."""

    frames: tuple[bytes, ...]


@dataclass
class PlainMigrationReport:
    """What every migration measures (DESIGN §5), in the plain dialect's terms."""

    source: str
    target: str
    started_s: float
    paused_s: float | None = None
    quiesced_s: float | None = None  # when the last outstanding reply arrived
    resumed_s: float | None = None
    outstanding_at_pause: int = 0
    replay_frames: dict[str, int] = field(default_factory=dict)
    replay_bytes: dict[str, int] = field(default_factory=dict)
    swallowed_frames: int = 0
    swallowed_bytes: int = 0
    greeting_frames: int = 0
    partitions_present: int = 0
    partitions_replayed: int = 0
    buffered_frames: int = 0
    buffered_bytes: int = 0
    replies_lost: int = 0
    source_lost: bool = False
    outcome: str | None = None
    cause: str | None = None

    @property
    def pause_s(self) -> float | None:
        if self.paused_s is None or self.resumed_s is None:
            return None
        return self.resumed_s - self.paused_s

    @property
    def quiesce_s(self) -> float | None:
        if self.paused_s is None or self.quiesced_s is None:
            return None
        return self.quiesced_s - self.paused_s

    def as_dict(self) -> dict[str, Any]:
        # The keys the envelope dialect's report has come first, with the same meaning, so the admin
        # API and the access log treat both dialects alike.
        return {
            "outcome": self.outcome,
            "cause": self.cause,
            "source": self.source,
            "target": self.target,
            "dialect": "plain",
            "pause_s": self.pause_s,
            "precopy_bytes": {},
            "replay_bytes": dict(self.replay_bytes),
            "partitions_present": self.partitions_present,
            "partitions_replayed": self.partitions_replayed,
            "resent_requests": 0,
            "unknown_outcomes": self.replies_lost,
            "source_lost": self.source_lost,
            "quiesce_s": self.quiesce_s,
            "outstanding_at_pause": self.outstanding_at_pause,
            "replay_frames": dict(self.replay_frames),
            "swallowed_frames": self.swallowed_frames,
            "swallowed_bytes": self.swallowed_bytes,
            "greeting_frames": self.greeting_frames,
            "buffered_frames": self.buffered_frames,
            "buffered_bytes": self.buffered_bytes,
        }


@dataclass(frozen=True, slots=True)
class Finished:
    outcome: str  # committed | rolled_back | aborted | deferred
    cause: str | None
    report: PlainMigrationReport


class PlainMigration:
    """Move one plain-dialect connection from ``source`` to ``target`` by replaying recorded frames.

    ``outstanding`` is the shell's count of replies the source still owes when the migration starts
    (the sum of the expected replies of forwarded frames, minus the server frames received since).
    ``recorder`` is the session's :class:`Recorder`; it is read when the replay starts.

    ``quiesce_timeout_s`` bounds the wait for outstanding replies (``None``: wait forever);
    ``replay_timeout_s`` bounds the rest, from the end of quiesce (or from the start when nothing was
    outstanding) to commit: connecting the target, its greeting and the replay.  ``greeting_frames``
    is how many frames the server sends by itself on a new connection; they are swallowed before the
    replay starts.

    Contract with the shell: call :meth:`start` once and execute its actions; from then until
    ``Finished``, feed every frame from the client, the source and the target to :meth:`handle` (only
    the machine's ``DeliverToClient`` reaches the client), and call it with :class:`Tick` at
    :attr:`deadline_s`.  After ``Finished`` the shell routes by itself; ``handle`` still answers a late
    ``TargetReply`` after a commit (or ``SourceReply`` after a rollback) with ``DeliverToClient``.
    """

    def __init__(
        self,
        *,
        source: str,
        target: str,
        recorder: Recorder,
        target_requires: Sequence[str],
        outstanding: int,
        now_s: float,
        quiesce_timeout_s: float | None = 5.0,
        replay_timeout_s: float | None = 5.0,
        greeting_frames: int = 0,
        max_buffered_bytes: int = 256 * 1024,
    ) -> None:
        if not _nonneg_int(outstanding):
            raise ValueError(f"outstanding must be an integer >= 0, not {outstanding!r}")
        if not _nonneg_int(greeting_frames):
            raise ValueError(f"greeting_frames must be an integer >= 0, not {greeting_frames!r}")
        for name, value in (("quiesce_timeout_s", quiesce_timeout_s), ("replay_timeout_s", replay_timeout_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, not {value!r}")
        self.source = source
        self.target = target
        self.recorder = recorder
        self.target_requires = tuple(target_requires)
        self.outstanding = outstanding
        self.quiesce_timeout_s = quiesce_timeout_s
        self.replay_timeout_s = replay_timeout_s
        self.greeting_left = greeting_frames
        self.max_buffered_bytes = max_buffered_bytes
        self.phase: Phase | None = None  # None until start()
        self.deadline_s: float | None = None
        self.target_connected = False
        self.source_alive = True
        self.buffered: list[bytes] = []
        self.buffered_bytes = 0
        self.reading_stopped = False
        self._queue: deque[tuple[str, bytes, int]] = deque()
        self._current: str | None = None  # partition of the frame whose replies are being swallowed
        self._replies_left = 0
        self.report = PlainMigrationReport(source, target, now_s, outstanding_at_pause=outstanding)

    @property
    def done(self) -> bool:
        return self.phase in FINAL

    # -- entry points ---------------------------------------------------------------------------------

    def start(self) -> list[Any]:
        if self.phase is not None:
            raise RuntimeError("start() was already called")
        now_s = self.report.started_s
        present = self.recorder.partitions()
        self.report.partitions_present = len(present)
        lost = self.recorder.overflowed() & set(self.target_requires)
        if lost:
            # Nothing has happened yet: the connection stays on the source, unpaused.
            return self._finish(Phase.DEFERRED, str(PartitionOverflowed(lost)), now_s, [])
        self.report.paused_s = now_s
        actions: list[Any] = [PauseClient(), ConnectTarget(self.target)]
        if self.outstanding:
            self.phase = Phase.QUIESCING
            self.deadline_s = None if self.quiesce_timeout_s is None else now_s + self.quiesce_timeout_s
        else:
            self._quiesced(now_s)
        return actions

    def handle(self, event: Any, now_s: float) -> list[Any]:
        if self.phase is None:
            raise RuntimeError("handle() before start()")
        kind = type(event)
        if self.phase in FINAL:
            if kind is TargetReply and self.phase is Phase.COMMITTED:
                return [DeliverToClient(event.body)]
            if kind is SourceReply and self.phase is Phase.ROLLED_BACK:
                return [DeliverToClient(event.body)]
            return []
        actions = self._dispatch(kind, event, now_s)
        if self.phase not in FINAL and self.deadline_s is not None and now_s >= self.deadline_s:
            actions += self._timeout(now_s)
        return actions

    # -- internals ------------------------------------------------------------------------------------

    def _dispatch(self, kind: type, event: Any, now_s: float) -> list[Any]:
        if kind is ClientFrame:
            return self._buffer(event.body)
        if kind is SourceReply:
            if not self.source_alive:
                return []
            if self.outstanding:
                self.outstanding -= 1
                if not self.outstanding and self.phase is Phase.QUIESCING:
                    self._quiesced(now_s)
                    return [DeliverToClient(event.body), *self._maybe_replay(now_s)]
            return [DeliverToClient(event.body)]
        if kind is TargetConnected:
            self.target_connected = True
            return self._maybe_replay(now_s)
        if kind is TargetReply:
            return self._target_reply(event.body, now_s)
        if kind is TargetFailed:
            return self._rollback(f"target_failed: {event.reason}", now_s)
        if kind is SourceFailed:
            return self._source_lost(event.reason, now_s)
        if kind is ClientGone:
            return self._finish(Phase.ABORTED, "client_gone", now_s, [CloseTarget()])
        return []  # Tick, or an event this machine does not know

    def _buffer(self, body: bytes) -> list[Any]:
        self.buffered.append(bytes(body))
        self.buffered_bytes += len(body)
        self.report.buffered_frames += 1
        self.report.buffered_bytes += len(body)
        if self.buffered_bytes >= self.max_buffered_bytes and not self.reading_stopped:
            self.reading_stopped = True
            return [StopReadingClient()]
        return []

    def _quiesced(self, now_s: float) -> None:
        self.phase = Phase.CONNECTING
        self.report.quiesced_s = now_s
        self.deadline_s = None if self.replay_timeout_s is None else now_s + self.replay_timeout_s

    def _maybe_replay(self, now_s: float) -> list[Any]:
        if self.phase is not Phase.CONNECTING or not self.target_connected or self.greeting_left:
            return []
        try:
            frames = self.recorder.frames_for(self.target_requires)
        except PartitionOverflowed as exc:
            return self._rollback(str(exc), now_s)
        self.report.partitions_replayed = len({p for p, _, _ in frames})
        self._queue = deque(frames)
        self.phase = Phase.REPLAYING
        return self._send_next(now_s)

    def _send_next(self, now_s: float) -> list[Any]:
        actions: list[Any] = []
        while self._queue:
            partition, body, replies = self._queue.popleft()
            actions.append(SendTarget(partition, body))
            r = self.report
            r.replay_frames[partition] = r.replay_frames.get(partition, 0) + 1
            r.replay_bytes[partition] = r.replay_bytes.get(partition, 0) + len(body)
            if replies:
                # One frame at a time: the next goes out once this one is answered, so a server that
                # handles frames concurrently still sees the login finished before the join.
                self._current = partition
                self._replies_left = replies
                return actions
        return actions + self._commit(now_s)

    def _target_reply(self, body: bytes, now_s: float) -> list[Any]:
        if self.phase is Phase.REPLAYING and self._replies_left:
            self.report.swallowed_frames += 1
            self.report.swallowed_bytes += len(body)
            self._replies_left -= 1
            return [] if self._replies_left else self._send_next(now_s)
        if self.greeting_left:
            self.greeting_left -= 1
            self.report.greeting_frames += 1
            self.report.swallowed_frames += 1
            self.report.swallowed_bytes += len(body)
            return self._maybe_replay(now_s)
        return self._rollback("unexpected_target_frame: the target sent a frame nobody asked for", now_s)

    def _timeout(self, now_s: float) -> list[Any]:
        if self.phase is Phase.QUIESCING:
            cause = f"quiesce_timeout: {self.outstanding} replies still outstanding after {self.quiesce_timeout_s} s"
        else:
            cause = f"replay_timeout: not committed {self.replay_timeout_s} s after quiesce ({self.phase.value if self.phase else '?'})"
        return self._rollback(cause, now_s)

    def _commit(self, now_s: float) -> list[Any]:
        actions: list[Any] = [Commit(self.target)]
        if self.buffered:
            actions.append(ReleaseClientFrames(tuple(self.buffered)))
        actions += [ResumeClient(), CloseSource()]
        return self._finish(Phase.COMMITTED, None, now_s, actions)

    def _rollback(self, cause: str, now_s: float) -> list[Any]:
        if not self.source_alive:
            # Nowhere to go back to: the source is gone and the target failed.
            return self._finish(Phase.ABORTED, f"{cause}; source already lost", now_s, [CloseTarget()])
        actions: list[Any] = [CloseTarget()]
        if self.buffered:
            actions.append(ReleaseClientFrames(tuple(self.buffered)))
        actions.append(ResumeClient())
        return self._finish(Phase.ROLLED_BACK, cause, now_s, actions)

    def _source_lost(self, reason: str, now_s: float) -> list[Any]:
        """The source died: carry on to the target alone; the replies it owed are lost."""
        self.source_alive = False
        self.report.source_lost = True
        actions: list[Any] = []
        if self.outstanding:
            actions.append(RepliesLost(self.outstanding))
            self.report.replies_lost += self.outstanding
            self.outstanding = 0
        if self.phase is Phase.QUIESCING:
            self._quiesced(now_s)
            actions += self._maybe_replay(now_s)
        return actions

    def _finish(self, phase: Phase, cause: str | None, now_s: float, actions: list[Any]) -> list[Any]:
        self.phase = phase
        self.deadline_s = None
        r = self.report
        if r.paused_s is not None:
            r.resumed_s = now_s
        r.outcome = phase.value
        r.cause = cause
        return [*actions, Finished(phase.value, cause, r)]
