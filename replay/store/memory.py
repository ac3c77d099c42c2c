"""In-memory partition store; also the state engine under ``DurableStore``.

Theory of operation
-------------------
State is ``{session_id: _Session}``; a session holds ``{partition: _Partition}`` and its last-activity
time.  Every public write validates everything first (names, version, types, limits) and only then
mutates, so a write that raises leaves the store unchanged (base.py).  Values are stored in their
*normalized* form: the result of decoding their canonical msgpack (tuples become lists, ``bytearray``
becomes ``bytes``, ``IntEnum`` becomes ``int``).  That is exactly what a reader of the log or of a
backend's envelope gets, so a recovered store equals the one that wrote the log, and digests computed
before and after a restart agree.

Each partition keeps ``nbytes``, the size of its data's canonical msgpack, maintained incrementally:
msgpack's plain encoding of a normalized value has the same length as its canonical encoding (only map
order differs), so a delta costs O(size of the delta), not O(size of the partition).

Every accepted change is reported to a journal hook (``_journal_*``); this class only counts them, the
durable store appends them to its commit batch.

Expiry: a session's idle clock is stamped by ``touch()``, and at creation with the latest time the store
has seen (``touch``/``expire`` arguments), so a session is idle from the moment it appears.  A session
created before the store has seen any time is stamped by the next ``expire()``; it is never dropped
before it has been idle for ``ttl_s``.  A min-heap of (last_active_s, session_id) with lazy deletion
makes ``expire()`` O(expired · log n) instead of a scan of every session.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack

from replay.canonical import canonical_packb
from replay.store.base import (
    InvalidData,
    PartitionState,
    StaleVersion,
    StoreClosed,
    StoreLimitExceeded,
    StoreLimits,
    StoreStatistics,
    VersionGap,
    validate_partition_name,
    validate_session_id,
)

__all__ = ["MemoryStore"]

_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})
_KEY_TYPES = frozenset({str, int, bytes})


class _Partition:
    __slots__ = ("data", "nbytes", "version", "view")

    def __init__(self, version: int, data: dict[Any, Any], nbytes: int) -> None:
        self.version = version
        self.data = data
        self.nbytes = nbytes
        self.view: PartitionState | None = None  # the copy handed out for ``version`` (read-only)


class _Session:
    __slots__ = ("last_active_s", "partitions")

    def __init__(self) -> None:
        self.partitions: dict[str, _Partition] = {}
        self.last_active_s: float | None = None


def map_header_bytes(n: int) -> int:
    """Size of a msgpack map header for ``n`` entries (fixmap, map16, map32)."""
    return 1 if n < 16 else 3 if n < 0x10000 else 5


def unpack_value(encoded: bytes) -> Any:
    """Decode canonical msgpack into the stored (normalized) form."""
    try:
        return msgpack.unpackb(encoded, strict_map_key=False)
    except (TypeError, ValueError) as exc:  # e.g. an array used as a nested map key
        raise InvalidData(f"value does not survive a msgpack round trip: {exc}") from None


def entry_bytes(key: Any, value: Any) -> int:
    """Encoded size of one map entry of normalized data."""
    return len(msgpack.packb(key)) + len(msgpack.packb(value))


def _normalize_key(key: Any) -> Any:
    """Top-level partition keys: str, int or bytes.  Not bool or float: ``True == 1`` and ``1.0 == 1``
    would let two peers that agree in Python disagree on the wire (and on the digest)."""
    t = type(key)
    if t in _KEY_TYPES:
        return key
    if isinstance(key, bool) or not isinstance(key, str | int | bytes):
        raise InvalidData(f"partition keys must be str, int or bytes, not {t.__name__}: {key!r}")
    return int(key) if isinstance(key, int) else str.__str__(key) if isinstance(key, str) else bytes(key)


def _encode(obj: Any, what: str) -> bytes:
    try:
        return canonical_packb(obj)
    except TypeError as exc:
        raise InvalidData(f"{what}: {exc}") from None


def _check_time(now_s: object) -> float:
    if isinstance(now_s, bool) or not isinstance(now_s, int | float) or not math.isfinite(now_s):
        raise ValueError(f"now_s must be a finite number of seconds, not {now_s!r}")
    return float(now_s)


class MemoryStore:
    """``PartitionStore`` held in this process's memory; nothing survives the process."""

    def __init__(self, *, ttl_s: float | None = 3600.0, limits: StoreLimits | None = None) -> None:
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError("ttl_s must be > 0 (or None: sessions never expire)")
        self.ttl_s = math.inf if ttl_s is None else float(ttl_s)
        self.limits = limits or StoreLimits()
        self._commit_seq = 0
        self._commits_total = 0
        self._expired_total = 0
        self._closed = False
        self._clear_state()

    def _clear_state(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._unstamped: set[str] = set()  # sessions created before the store saw any time
        self._idle_heap: list[tuple[float, str]] = []  # (last_active_s, sid); stale entries skipped
        self._clock_s: float | None = None  # latest time seen, volatile (not persisted)
        self._partitions = 0
        self._data_bytes = 0
        self._pending_ops = 0

    # --- reads ------------------------------------------------------------------------------------

    def get_partition_list(self, session_id: str) -> list[str]:
        self._check_open()
        session = self._sessions.get(validate_session_id(session_id, self.limits))
        return sorted(session.partitions) if session is not None else []

    def get_partition_data(self, session_id: str, partition: str) -> PartitionState | None:
        self._check_open()
        validate_session_id(session_id, self.limits)
        validate_partition_name(partition, self.limits)
        session = self._sessions.get(session_id)
        part = session.partitions.get(partition) if session is not None else None
        if part is None:
            return None
        view = part.view
        if view is None or view.version != part.version:
            # A msgpack round trip is a deep copy at C speed (values are msgpack-clean by construction).
            # Readers share it until the partition changes, and with it its memoised digest: callers
            # treat partition data as read-only.
            copy = msgpack.unpackb(msgpack.packb(part.data), strict_map_key=False)
            view = part.view = PartitionState(part.version, copy)
        return view

    def sessions(self) -> Iterable[str]:
        self._check_open()
        return list(self._sessions)

    def last_active_s(self, session_id: str) -> float | None:
        self._check_open()
        session = self._sessions.get(session_id)
        return session.last_active_s if session is not None else None

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    # --- writes -----------------------------------------------------------------------------------

    def set_partition_data(
        self, session_id: str, partition: str, data: Mapping[Any, Any], *, version: int | None = None
    ) -> int:
        self._check_open()
        validate_session_id(session_id, self.limits)
        validate_partition_name(partition, self.limits)
        if not isinstance(data, Mapping):
            raise InvalidData(f"partition data must be a mapping, not {type(data).__name__}")
        session = self._sessions.get(session_id)
        part = session.partitions.get(partition) if session is not None else None
        new_version = (part.version if part is not None else 0) + 1
        if version is not None:
            self._check_version(session_id, partition, part, version)
        normalized = {_normalize_key(k): v for k, v in data.items()}
        if len(normalized) != len(data):
            raise InvalidData("partition data has keys that collide once normalized")
        encoded = _encode(normalized, f"partition {partition!r}")
        nbytes = len(encoded)
        self._check_partition_bytes(session_id, partition, nbytes)
        self._check_capacity(session_id, session, part)
        stored = unpack_value(encoded)
        self._put_partition(session_id, partition, new_version, stored, nbytes, journal=True)
        self._journal_set(session_id, partition, new_version, encoded)
        return new_version

    def apply_delta(
        self,
        session_id: str,
        partition: str,
        version: int,
        set_: Mapping[Any, Any],
        delete: Sequence[Any],
    ) -> int:
        self._check_open()
        validate_session_id(session_id, self.limits)
        validate_partition_name(partition, self.limits)
        session = self._sessions.get(session_id)
        part = session.partitions.get(partition) if session is not None else None
        self._check_version(session_id, partition, part, version)
        if not isinstance(set_, Mapping):
            raise InvalidData(f"delta 'set' must be a mapping, not {type(set_).__name__}")
        if isinstance(delete, str | bytes | bytearray | Mapping) or not isinstance(delete, Iterable):
            raise InvalidData(f"delta 'del' must be a list of keys, not {type(delete).__name__}")
        deletes = list(dict.fromkeys(_normalize_key(k) for k in delete))
        sets: list[tuple[Any, bytes, bytes, Any]] = []  # (key, key bytes, value bytes, stored value)
        for k, v in set_.items():
            key = _normalize_key(k)
            encoded = _encode(v, f"value of key {key!r}")
            stored = v if type(v) in _IMMUTABLE else unpack_value(encoded)
            sets.append((key, msgpack.packb(key), encoded, stored))
        if deletes and sets and not set(deletes).isdisjoint(s[0] for s in sets):
            # The dialect does not order 'set' against 'del'; refuse rather than guess.
            raise InvalidData("delta names the same key in both 'set' and 'del'")
        data = part.data if part is not None else {}
        n = len(data)
        body = (part.nbytes - map_header_bytes(n)) if part is not None else 0
        for key in deletes:
            if key in data:
                body -= entry_bytes(key, data[key])
                n -= 1
        for key, kb, vb, _ in sets:
            if key in data:
                body -= entry_bytes(key, data[key])
            else:
                n += 1
            body += len(kb) + len(vb)
        nbytes = map_header_bytes(n) + body
        self._check_partition_bytes(session_id, partition, nbytes)
        self._check_capacity(session_id, session, part)
        if part is None:
            self._put_partition(session_id, partition, version, {}, 1, journal=True)
            part = self._sessions[session_id].partitions[partition]
            data = part.data
        for key in deletes:
            data.pop(key, None)
        for key, _, _, stored in sets:
            data[key] = stored
        self._data_bytes += nbytes - part.nbytes
        part.nbytes = nbytes
        part.version = version
        self._journal_delta(session_id, partition, version, [(kb, vb) for _, kb, vb, _ in sets], deletes)
        return version

    def delete_session(self, session_id: str) -> None:
        self._check_open()
        validate_session_id(session_id, self.limits)
        if session_id in self._sessions:
            self._drop_session(session_id)
            self._journal_drop(session_id)

    def touch(self, session_id: str, now_s: float) -> None:
        self._check_open()
        now_s = _check_time(now_s)
        if self._clock_s is None or now_s > self._clock_s:
            self._clock_s = now_s
        session = self._sessions.get(session_id)
        if session is not None and (session.last_active_s is None or now_s > session.last_active_s):
            self._stamp(session_id, now_s)
            self._journal_stamp(session_id, now_s)

    def expire(self, now_s: float) -> list[str]:
        self._check_open()
        now_s = _check_time(now_s)
        if self._clock_s is None or now_s > self._clock_s:
            self._clock_s = now_s
        for sid in sorted(self._unstamped):
            self._stamp(sid, now_s)
            self._journal_stamp(sid, now_s)
        expired: list[str] = []
        heap = self._idle_heap
        while heap and now_s - heap[0][0] > self.ttl_s:
            stamped_s, sid = heapq.heappop(heap)
            session = self._sessions.get(sid)
            if session is None or session.last_active_s != stamped_s:
                continue  # superseded by a later touch, or already gone
            self._drop_session(sid)
            self._journal_drop(sid)
            expired.append(sid)
        self._expired_total += len(expired)
        return expired

    # --- commit and lifecycle -----------------------------------------------------------------------

    def commit(self) -> int:
        self._check_open()
        if self._pending_ops:
            self._pending_ops = 0
            self._commit_seq += 1
            self._commits_total += 1
        return self._commit_seq

    @property
    def commit_seq(self) -> int:
        return self._commit_seq

    @property
    def durable_seq(self) -> int:
        # Nothing outlives the process; every commit is as durable as this store can make it.
        return self._commit_seq

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            sessions=len(self._sessions),
            partitions=self._partitions,
            data_bytes=self._data_bytes,
            commit_seq=self._commit_seq,
            durable_seq=self.durable_seq,
            pending_ops=self._pending_ops,
            commits_total=self._commits_total,
            expired_total=self._expired_total,
        )

    def close(self) -> None:
        if not self._closed:
            self.commit()
            self._closed = True

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- journal hooks (the durable store overrides these) -----------------------------------------

    def _journal_set(self, session_id: str, partition: str, version: int, encoded: bytes) -> None:
        self._pending_ops += 1

    def _journal_delta(
        self,
        session_id: str,
        partition: str,
        version: int,
        sets: list[tuple[bytes, bytes]],
        deletes: list[Any],
    ) -> None:
        self._pending_ops += 1

    def _journal_drop(self, session_id: str) -> None:
        self._pending_ops += 1

    def _journal_stamp(self, session_id: str, last_active_s: float) -> None:
        self._pending_ops += 1

    # --- state primitives (no validation, no journal: also used to replay a log) --------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    def _check_version(self, session_id: str, partition: str, part: _Partition | None, version: int) -> None:
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidData(f"version must be an int, not {type(version).__name__}")
        current = part.version if part is not None else 0
        if version <= current:
            raise StaleVersion(session_id, partition, current, version)
        if version > current + 1:
            raise VersionGap(session_id, partition, current, version)

    def _check_partition_bytes(self, session_id: str, partition: str, nbytes: int) -> None:
        if nbytes > self.limits.max_partition_bytes:
            raise StoreLimitExceeded(
                "max_partition_bytes",
                self.limits.max_partition_bytes,
                nbytes,
                f"partition {partition!r} of session {session_id!r} would hold {nbytes} bytes",
            )

    def _check_capacity(self, session_id: str, session: _Session | None, part: _Partition | None) -> None:
        if session is None and len(self._sessions) >= self.limits.max_sessions:
            raise StoreLimitExceeded(
                "max_sessions",
                self.limits.max_sessions,
                len(self._sessions) + 1,
                f"cannot add session {session_id!r}",
            )
        if session is not None and part is None:
            n = len(session.partitions) + 1
            if n > self.limits.max_partitions_per_session:
                raise StoreLimitExceeded(
                    "max_partitions_per_session",
                    self.limits.max_partitions_per_session,
                    n,
                    f"session {session_id!r} already has {n - 1} partitions",
                )

    def _put_partition(
        self,
        session_id: str,
        partition: str,
        version: int,
        data: dict[Any, Any],
        nbytes: int,
        *,
        journal: bool,
    ) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
            # A replayed log restores stamps from its own stamp records, so only live writes stamp here.
            if journal and self._clock_s is not None:
                self._stamp(session_id, self._clock_s)
                self._journal_stamp(session_id, self._clock_s)
            else:
                self._unstamped.add(session_id)
        old = session.partitions.get(partition)
        if old is None:
            self._partitions += 1
        else:
            self._data_bytes -= old.nbytes
        session.partitions[partition] = _Partition(version, data, nbytes)
        self._data_bytes += nbytes

    def _drop_session(self, session_id: str) -> None:
        session = self._sessions.pop(session_id)
        self._unstamped.discard(session_id)
        self._partitions -= len(session.partitions)
        self._data_bytes -= sum(p.nbytes for p in session.partitions.values())

    def _stamp(self, session_id: str, last_active_s: float) -> None:
        session = self._sessions[session_id]
        session.last_active_s = last_active_s
        self._unstamped.discard(session_id)
        if self.ttl_s != math.inf:
            heapq.heappush(self._idle_heap, (last_active_s, session_id))
            if len(self._idle_heap) > 2 * len(self._sessions) + 1024:
                self._rebuild_idle_heap()

    def _rebuild_idle_heap(self) -> None:
        self._idle_heap = [
            (s.last_active_s, sid) for sid, s in self._sessions.items() if s.last_active_s is not None
        ]
        heapq.heapify(self._idle_heap)
