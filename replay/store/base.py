"""The partition store contract: data model, errors, limits and the ``PartitionStore`` protocol.

DESIGN.md section 5 and docs/store.md.  A store maps ``session -> partition -> key -> value``; each
partition carries a version that starts at 1 and rises by exactly 1 per change, the same ``v`` that the
envelope dialect's deltas carry (docs/protocol.md, "Partition data, deltas and digests").

Rules every implementation keeps:

- Reads see every write made so far, committed or not.  ``commit()`` is the group-commit point: it makes
  everything written before it durable as far as the implementation and its ``fsync`` mode promise, and
  returns a commit sequence number that rises by 1 per non-empty commit.
- Returned data is a private copy: callers may mutate it freely.
- Writes are all-or-nothing: a write that raises leaves the store unchanged.
- Nothing here assumes the data lives in local memory, so the same protocol fits a Redis-backed store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import xxhash

from replay.canonical import canonical_packb
from replay.canonical import digest as _digest

__all__ = [
    "InvalidData",
    "InvalidName",
    "PartitionState",
    "PartitionStore",
    "StaleVersion",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreIOError",
    "StoreLimitExceeded",
    "StoreLimits",
    "StoreLocked",
    "StoreStatistics",
    "VersionConflict",
    "VersionGap",
    "validate_partition_name",
    "validate_session_id",
]


# --- errors ---------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base class of every error the store raises."""


class InvalidName(StoreError, ValueError):
    """A session id or partition name that the store does not accept."""


class InvalidData(StoreError, ValueError):
    """Partition data or a delta that cannot be stored (unsupported type, bad key, ambiguous delta)."""


class VersionConflict(StoreError):
    """A delta or versioned write whose version is not ``current + 1``."""

    def __init__(self, session_id: str, partition: str, current_version: int, got_version: int) -> None:
        self.session_id = session_id
        self.partition = partition
        self.current_version = current_version
        self.got_version = got_version
        super().__init__(
            f"{type(self).__name__}: partition {partition!r} of session {session_id!r} is at version "
            f"{current_version}; a change to version {got_version} needs version {current_version + 1}"
        )


class StaleVersion(VersionConflict):
    """The version is not above the current one: the change is already applied or was superseded."""


class VersionGap(VersionConflict):
    """The version skips ahead: at least one earlier change is missing."""


class StoreLimitExceeded(StoreError):
    """A write would break a configured limit (``limit`` names the ``StoreLimits`` field)."""

    def __init__(self, limit: str, maximum: int, value: int, detail: str) -> None:
        self.limit = limit
        self.maximum = maximum
        self.value = value
        super().__init__(f"{limit} exceeded ({value} > {maximum}): {detail}")


class StoreClosed(StoreError):
    """The store was closed, or a failed write made it unusable until it is reopened."""


class StoreLocked(StoreError):
    """Another store object (in this or another process) has the directory open."""


class StoreIOError(StoreError):
    """Writing or syncing the log failed; ``__cause__`` holds the ``OSError``."""


class StoreCorrupted(StoreError):
    """Recovery found damage it must not repair silently (docs/store.md, "Recovery")."""


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition as the envelope dialect's ``state`` carries it: ``{"v": version, "data": {...}}``."""

    version: int
    data: Mapping[Any, Any]
    # (digest, canonical size), computed once: a migration needs both, several times, and canonical
    # encoding is the costly part of it.  ``data`` must not be changed after the first use.
    _memo: list[int] = field(default_factory=list, compare=False, repr=False)

    def _canonical(self) -> list[int]:
        memo = self._memo
        if not memo:
            packed = canonical_packb(self.data)
            memo.extend((xxhash.xxh3_64_intdigest(packed), len(packed)))
        return memo

    @property
    def digest(self) -> int:
        """xxh3_64 of the canonical msgpack of ``data`` (docs/protocol.md); computed once."""
        if not isinstance(self.data, Mapping):
            return _digest(self.data)  # raises the TypeError a non-mapping deserves
        return self._canonical()[0]

    @property
    def canonical_size(self) -> int:
        """Bytes of the canonical msgpack of ``data``: what replaying this partition sends."""
        return self._canonical()[1]

    def to_wire(self) -> dict[str, Any]:
        """The envelope form, ``{"v": ..., "data": ...}``."""
        return {"v": self.version, "data": self.data}


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds on what remote peers (clients, backends, admin callers) can make the store hold."""

    max_sessions: int = 1_000_000
    max_partitions_per_session: int = 32
    # Canonical msgpack size of one partition's data map; keeps a restore envelope under the default
    # 1 MiB max_frame_bytes of docs/protocol.md even with a few partitions in it.
    max_partition_bytes: int = 256 * 1024
    max_session_id_bytes: int = 128  # docs/protocol.md: sid is a string of at most 128 bytes
    max_partition_name_bytes: int = 64

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"StoreLimits.{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """A snapshot of a store's counters (``statistics()``)."""

    sessions: int
    partitions: int
    data_bytes: int  # sum of the canonical sizes of every partition's data
    commit_seq: int  # last commit sequence number
    durable_seq: int  # last commit the fsync mode promises to keep
    pending_ops: int  # writes not yet committed
    commits_total: int = 0
    fsyncs_total: int = 0
    log_bytes: int = 0  # bytes in segments not yet folded into a snapshot
    segments: int = 0
    snapshots_total: int = 0
    expired_total: int = 0


# --- names ----------------------------------------------------------------------------------------

# Partition names travel in URLs (GET /sessions/{sid}/partitions/{name}) and config files (requires:).
_PARTITION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
# Session ids come from clients or tokens; refuse control characters (logs, terminals) and '/' (the
# admin API path segment).
_SID_BAD_RE = re.compile(r"[\x00-\x1f\x7f-\x9f/]")


def validate_session_id(session_id: object, limits: StoreLimits) -> str:
    if type(session_id) is not str:
        raise InvalidName(f"session id must be a str, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidName("session id must not be empty")
    try:
        n = len(session_id.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        raise InvalidName(f"session id {session_id!r} is not valid UTF-8") from None
    if n > limits.max_session_id_bytes:
        raise InvalidName(f"session id is {n} bytes, more than {limits.max_session_id_bytes}")
    if _SID_BAD_RE.search(session_id):
        raise InvalidName(f"session id {session_id!r} contains '/' or a control character")
    return session_id


def validate_partition_name(partition: object, limits: StoreLimits) -> str:
    if type(partition) is not str:
        raise InvalidName(f"partition name must be a str, not {type(partition).__name__}")
    if len(partition) > limits.max_partition_name_bytes or not _PARTITION_RE.match(partition):
        raise InvalidName(
            f"partition name {partition!r} must be 1-{limits.max_partition_name_bytes} characters of "
            "A-Z a-z 0-9 _ . - and not start with '.' or '-'"
        )
    return partition


# --- the protocol ---------------------------------------------------------------------------------


@runtime_checkable
class PartitionStore(Protocol):
    """What the proxy, the migration machine and the admin API use.  Not thread-safe: one owner."""

    def get_partition_list(self, session_id: str) -> list[str]:
        """Names of the session's partitions, sorted; ``[]`` for an unknown session."""
        ...

    def get_partition_data(self, session_id: str, partition: str) -> PartitionState | None:
        """The partition's version and a copy of its data; ``None`` if absent."""
        ...

    def set_partition_data(
        self, session_id: str, partition: str, data: Mapping[Any, Any], *, version: int | None = None
    ) -> int:
        """Replace the partition's data (creating session and partition as needed); return the new
        version, ``current + 1``.  With ``version`` given (a delta carrying ``data``), it must equal
        ``current + 1`` or ``StaleVersion``/``VersionGap`` is raised."""
        ...

    def apply_delta(
        self,
        session_id: str,
        partition: str,
        version: int,
        set_: Mapping[Any, Any],
        delete: Sequence[Any],
    ) -> int:
        """Apply a delta from a backend's ``res``/``fenced``: ``version`` must be ``current + 1``
        (``current`` is 0 for an absent partition); set ``set_`` keys, remove ``delete`` keys.
        Returns ``version``."""
        ...

    def delete_session(self, session_id: str) -> None:
        """Drop the session and all its partitions (no-op if unknown)."""
        ...

    def touch(self, session_id: str, now_s: float) -> None:
        """Record activity at ``now_s`` (wall-clock seconds) for TTL expiry; no-op if unknown."""
        ...

    def expire(self, now_s: float) -> list[str]:
        """Drop every session idle for more than ``ttl_s`` at ``now_s``; return their ids."""
        ...

    def last_active_s(self, session_id: str) -> float | None:
        """Time of the session's last activity, ``None`` if unknown or not yet stamped."""
        ...

    def sessions(self) -> Iterable[str]:
        """Every session id (a snapshot; safe to iterate while writing)."""
        ...

    def commit(self) -> int:
        """Group commit; returns the commit sequence number of the last commit."""
        ...

    @property
    def durable_seq(self) -> int:
        """Highest commit sequence number the fsync mode promises survives a crash."""
        ...

    def statistics(self) -> StoreStatistics: ...

    def close(self) -> None:
        """Commit what is pending, make it durable, release resources.  Idempotent."""
        ...
