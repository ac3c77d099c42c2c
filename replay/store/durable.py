"""Durable partition store: the in-memory engine plus an append-only log of checksummed segments and
periodic snapshots, in one directory.  DESIGN.md section 5; the file format, recovery rules and fsync
guarantees are in docs/store.md.

Theory of operation
-------------------
Writes change the in-memory state at once (reads see them) and append an encoded *op* to the current
batch.  ``commit()`` (group commit: the proxy calls it once per tick) writes the whole batch as ONE
record, ``[commit_seq, [op, ...]]``, to the current segment, so a commit is recovered entirely or not at
all.  Then it syncs according to the fsync mode:

- ``always``: ``fsync`` on every commit that wrote something; ``commit()`` returns only once the
  record is on stable storage.
- ``batch``: ``fsync`` when ``batch_interval_s`` has passed since the last one or ``batch_bytes`` are
  unsynced, before a segment is closed, and on ``close()``; ``sync()`` forces one.  Call ``commit()``
  on every tick even when idle: a due sync happens there.
- ``off``: never; the data is in the kernel's page cache once ``commit()`` returns, so it survives the
  process being killed, not the machine losing power.

``durable_seq`` is the highest commit the mode promises to keep; it is what the proxy may acknowledge to
backends (the envelope dialect's ``ack``).

Ops (msgpack arrays): ``["s", sid, partition, version, data]`` full replace; ``["d", sid, partition,
version, {set}, [del]]`` delta; ``["x", sid]`` tombstone (deleted or expired session); ``["t", sid,
last_active_s]`` activity stamp.  Stamps are coalesced per batch (one per session, the latest) and
written after the batch's other ops, so a session touched on every request costs one op per commit.

A segment is closed once it holds ``segment_bytes``; the next commit opens ``seg-<first seq>.log``.
When the segments written since the last snapshot hold ``snapshot_every_bytes``, the whole state is
written to ``snap-<seq>.snap`` (temp file, fsync, atomic rename, directory fsync) and every segment is
deleted: all their commits are in the snapshot.

Recovery (on open): load the newest valid snapshot; replay segments in order, skipping commits the
snapshot holds; a damaged record in the LAST segment is a torn write (the crash hit mid-append): the
segment is truncated there and everything before it is kept.  Damage anywhere else, a gap in commit
sequence numbers, or a version that does not follow, is ``StoreCorrupted``: repairing it silently would
drop acknowledged data.

I/O errors: a failed write is cut back off the segment and the batch kept for the next ``commit()``.
A failed ``fsync`` leaves the store unusable until it is reopened, because the kernel may have dropped
the dirty pages it could not write (PostgreSQL's "fsyncgate", 2018): only recovery from what is really on
disk tells what survived.

Not thread-safe: one owner calls every method.  File I/O is blocking; an asyncio owner calls
``commit()`` once per tick (from a worker thread if ``always`` fsync latency matters).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack

from replay.store.base import (
    StoreClosed,
    StoreCorrupted,
    StoreIOError,
    StoreLimits,
    StoreLocked,
    StoreStatistics,
)
from replay.store.memory import MemoryStore, entry_bytes, map_header_bytes
from replay.store.records import (
    FILE_HEADER_BYTES,
    SEGMENT_MAGIC,
    SNAPSHOT_MAGIC,
    BadHeader,
    decode_file_header,
    encode_file_header,
    encode_record,
    iter_records,
)

__all__ = ["DurableStore", "FsyncMode", "RecoveryReport"]

_SEGMENT_RE = re.compile(r"seg-(\d{20})\.log\Z")
_SNAPSHOT_RE = re.compile(r"snap-(\d{20})\.snap\Z")
_LOCK_NAME = "LOCK"
_SNAPSHOT_CHUNK_BYTES = 1 << 20  # sessions per snapshot record: about this many bytes of data


class FsyncMode(enum.Enum):
    ALWAYS = "always"
    BATCH = "batch"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the directory found and did."""

    snapshot_seq: int  # commit the loaded snapshot holds (0: none)
    commit_seq: int  # last recovered commit
    segments_replayed: int
    commits_replayed: int  # commits applied from segments (after the snapshot)
    truncated_segment: str | None  # file name, when a torn tail was cut off
    truncated_bytes: int
    damage: str | None  # why the tail was cut
    removed_files: tuple[str, ...]  # temp files, torn empty segments, files a snapshot made redundant


class _Damaged(Exception):
    pass


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 0x10000:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


_packb = msgpack.packb
_OP_SET = _array_header(5) + _packb("s")
_OP_DELTA = _array_header(6) + _packb("d")


def _unpack(payload: Any) -> Any:
    return msgpack.unpackb(payload, strict_map_key=False)


class DurableStore(MemoryStore):
    """``PartitionStore`` persisted in ``directory`` (created if missing); see the module docstring."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncMode | str = FsyncMode.BATCH,
        ttl_s: float | None = 3600.0,
        limits: StoreLimits | None = None,
        segment_bytes: int = 64 << 20,
        snapshot_every_bytes: int = 256 << 20,
        batch_interval_s: float = 0.05,
        batch_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ttl_s=ttl_s, limits=limits)
        self.fsync = FsyncMode(fsync)
        if segment_bytes < 1 or snapshot_every_bytes < 1 or batch_bytes < 1 or batch_interval_s < 0:
            raise ValueError(
                "segment_bytes, snapshot_every_bytes, batch_bytes must be >= 1, batch_interval_s >= 0"
            )
        self.segment_bytes = segment_bytes
        self.snapshot_every_bytes = snapshot_every_bytes
        self.batch_interval_s = batch_interval_s
        self.batch_bytes = batch_bytes
        self._clock = clock
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

        self._batch: list[bytes] = []
        self._batch_stamps: dict[str, float] = {}
        self._segment: IO[bytes] | None = None  # open for append; None: the next commit opens one
        self._segment_size = 0
        self._segments: list[Path] = []  # live segments, oldest first (the last may be open)
        self._log_bytes = 0  # bytes in segments since the last snapshot
        self._durable_seq = 0
        self._unsynced_bytes = 0
        self._last_sync_s = -float("inf")
        self._failed: BaseException | None = None
        self._fsyncs_total = 0
        self._snapshots_total = 0
        self.last_snapshot_error: str | None = None

        self._lock_file: IO[bytes] | None = open(self.directory / _LOCK_NAME, "a+b")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            self._closed = True
            raise StoreLocked(f"{self.directory} is open in another store object or process") from None
        try:
            self.recovery = self._recover()
        except BaseException:
            self._release()
            raise

    # --- journal: encode each accepted change for the current batch ---------------------------------

    def _journal_set(self, session_id: str, partition: str, version: int, encoded: bytes) -> None:
        self._batch.append(_OP_SET + _packb(session_id) + _packb(partition) + _packb(version) + encoded)

    def _journal_delta(
        self,
        session_id: str,
        partition: str,
        version: int,
        sets: list[tuple[bytes, bytes]],
        deletes: list[Any],
    ) -> None:
        parts = [_OP_DELTA, _packb(session_id), _packb(partition), _packb(version), _map_header(len(sets))]
        for kb, vb in sets:
            parts.append(kb)
            parts.append(vb)
        parts.append(_packb(deletes))
        self._batch.append(b"".join(parts))

    def _journal_drop(self, session_id: str) -> None:
        self._batch_stamps.pop(session_id, None)
        self._batch.append(_packb(("x", session_id)))

    def _journal_stamp(self, session_id: str, last_active_s: float) -> None:
        self._batch_stamps[session_id] = last_active_s

    # --- commit ------------------------------------------------------------------------------------

    def commit(self) -> int:
        self._check_open()
        if self._batch or self._batch_stamps:
            seq = self._commit_seq + 1
            ops = self._batch
            if self._batch_stamps:
                ops = ops + [_packb(("t", sid, t)) for sid, t in self._batch_stamps.items()]
            payload = b"".join((b"\x92", _packb(seq), _array_header(len(ops)), *ops))
            self._append(seq, encode_record(payload))
            self._batch = []
            self._batch_stamps = {}
            self._commit_seq = seq
            self._commits_total += 1
        if self._commit_seq > self._durable_seq:
            if self.fsync is FsyncMode.OFF:
                self._durable_seq = self._commit_seq
            elif (
                self.fsync is FsyncMode.ALWAYS
                or self._unsynced_bytes >= self.batch_bytes
                or self._clock() - self._last_sync_s >= self.batch_interval_s
            ):
                self._sync_segment()
        if self._segment is not None and self._segment_size >= self.segment_bytes:
            self._close_segment()
        if self._log_bytes >= self.snapshot_every_bytes:
            self._snapshot()
        return self._commit_seq

    def sync(self) -> int:
        """Make every commit so far durable now (fsync, unless the mode is ``off``); return ``durable_seq``."""
        self._check_open()
        if self._commit_seq > self._durable_seq and self.fsync is not FsyncMode.OFF:
            self._sync_segment()
        return self._durable_seq

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            sessions=len(self._sessions),
            partitions=self._partitions,
            data_bytes=self._data_bytes,
            commit_seq=self._commit_seq,
            durable_seq=self._durable_seq,
            pending_ops=len(self._batch) + len(self._batch_stamps),
            commits_total=self._commits_total,
            fsyncs_total=self._fsyncs_total,
            log_bytes=self._log_bytes,
            segments=len(self._segments),
            snapshots_total=self._snapshots_total,
            expired_total=self._expired_total,
        )

    def close(self) -> None:
        """Commit what is pending, sync it (unless ``off``), release the directory.  Idempotent."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.commit()
                self.sync()
        finally:
            self._release()

    def _check_open(self) -> None:
        if self._failed is not None:
            raise StoreClosed(
                f"the store at {self.directory} failed on an I/O error ({self._failed}); "
                "reopen it to recover from what is on disk"
            ) from self._failed
        if self._closed:
            raise StoreClosed("the store is closed")

    def _release(self) -> None:
        self._closed = True
        if self._segment is not None:
            with contextlib.suppress(OSError):
                self._segment.close()
            self._segment = None
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.close()  # closing the descriptor drops the flock
            self._lock_file = None

    # --- segments ----------------------------------------------------------------------------------

    def _append(self, seq: int, record: bytes) -> None:
        if self._segment is None:
            self._open_segment(seq)
        f = self._segment
        assert f is not None
        before = self._segment_size
        try:
            view = memoryview(record)
            while view:
                n = f.write(view)
                view = view[n:]
        except OSError as exc:
            try:  # cut the partial record off, so a retried commit appends after intact data
                os.ftruncate(f.fileno(), before)
                f.seek(before)
            except OSError as exc2:
                self._failed = exc2
            raise StoreIOError(f"writing commit {seq} to {f.name} failed: {exc}") from exc
        self._segment_size += len(record)
        self._log_bytes += len(record)
        self._unsynced_bytes += len(record)

    def _open_segment(self, first_seq: int) -> None:
        path = self.directory / f"seg-{first_seq:020d}.log"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            f = open(fd, "ab", buffering=0)
        except OSError as exc:
            raise StoreIOError(f"creating segment {path} failed: {exc}") from exc
        try:
            f.write(encode_file_header(SEGMENT_MAGIC, first_seq))
            if self.fsync is not FsyncMode.OFF:
                self._fsync(f.fileno())
                self._fsync_directory()  # the new name must survive too
        except OSError as exc:
            f.close()
            with contextlib.suppress(OSError):
                path.unlink()
            raise StoreIOError(f"creating segment {path} failed: {exc}") from exc
        self._segment = f
        self._segment_size = FILE_HEADER_BYTES
        self._log_bytes += FILE_HEADER_BYTES
        self._segments.append(path)

    def _close_segment(self) -> None:
        if self._commit_seq > self._durable_seq and self.fsync is not FsyncMode.OFF:
            self._sync_segment()  # the next fsync goes to the next segment's descriptor
        assert self._segment is not None
        self._segment.close()
        self._segment = None

    def _sync_segment(self) -> None:
        if self._segment is not None:
            try:
                self._fsync(self._segment.fileno())
            except OSError as exc:
                self._failed = exc
                raise StoreIOError(f"fsync of {self._segment.name} failed: {exc}") from exc
        self._durable_seq = self._commit_seq
        self._unsynced_bytes = 0
        self._last_sync_s = self._clock()

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)
        self._fsyncs_total += 1

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # --- snapshots ---------------------------------------------------------------------------------

    def _snapshot(self) -> None:
        """Write the whole state as of ``commit_seq`` and drop the segments it replaces.

        A failure here does not fail the commit that triggered it: the segments still hold everything.
        """
        seq = self._commit_seq
        final = self.directory / f"snap-{seq:020d}.snap"
        tmp = final.with_name(final.name + ".tmp")
        sync = self.fsync is not FsyncMode.OFF
        try:
            with open(tmp, "wb") as f:
                f.write(encode_file_header(SNAPSHOT_MAGIC, seq))
                chunk: list[Any] = []
                size = 0
                for sid, session in self._sessions.items():
                    parts = [(name, p.version, p.data) for name, p in session.partitions.items()]
                    chunk.append((sid, session.last_active_s, parts))
                    size += 64 + sum(p.nbytes for p in session.partitions.values())
                    if size >= _SNAPSHOT_CHUNK_BYTES:
                        f.write(encode_record(_packb(("S", chunk))))
                        chunk, size = [], 0
                if chunk:
                    f.write(encode_record(_packb(("S", chunk))))
                f.write(encode_record(_packb(("E", len(self._sessions), self._partitions))))
                f.flush()
                if sync:
                    self._fsync(f.fileno())
            os.replace(tmp, final)
            if sync:
                self._fsync_directory()
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.last_snapshot_error = f"{final.name}: {exc}"
            self._log_bytes = 0  # try again after another snapshot_every_bytes of log
            return
        self._snapshots_total += 1
        self.last_snapshot_error = None
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        if sync:
            self._durable_seq = seq
            self._unsynced_bytes = 0
        for path in self._segments:
            with contextlib.suppress(OSError):
                path.unlink()
        for name in os.listdir(self.directory):
            m = _SNAPSHOT_RE.match(name)
            if m and int(m.group(1)) < seq:
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
        self._segments = []
        self._log_bytes = 0
        if sync:
            with contextlib.suppress(OSError):
                self._fsync_directory()

    def _load_snapshot(self, path: Path, seq: int) -> None:
        buf = path.read_bytes()
        try:
            header_seq = decode_file_header(buf, SNAPSHOT_MAGIC)
        except BadHeader as exc:
            raise _Damaged(str(exc)) from None
        if header_seq != seq:
            raise _Damaged(f"header says commit {header_seq}, the name says {seq}")
        end_seen = False
        for offset, payload, error in iter_records(buf, FILE_HEADER_BYTES):
            if error is not None:
                raise _Damaged(f"offset {offset}: {error}")
            if end_seen:
                raise _Damaged(f"offset {offset}: data after the end record")
            try:
                obj = _unpack(payload)
                if obj[0] == "S":
                    for sid, last_active_s, parts in obj[1]:
                        for name, version, data in parts:
                            self._put_partition(sid, name, version, data, len(_packb(data)), journal=False)
                        if last_active_s is not None:
                            self._stamp(sid, float(last_active_s))
                elif obj[0] == "E":
                    if (obj[1], obj[2]) != (len(self._sessions), self._partitions):
                        raise _Damaged(f"end record counts {obj[1:]} do not match the data")
                    end_seen = True
                else:
                    raise _Damaged(f"offset {offset}: unknown record kind {obj[0]!r}")
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise _Damaged(f"offset {offset}: malformed record ({exc})") from None
        if not end_seen:
            raise _Damaged("no end record (incomplete snapshot)")

    # --- recovery ----------------------------------------------------------------------------------

    def _recover(self) -> RecoveryReport:
        removed: list[str] = []
        segments: list[tuple[int, Path]] = []
        snapshots: list[tuple[int, Path]] = []
        for name in sorted(os.listdir(self.directory)):
            path = self.directory / name
            if name.endswith(".tmp"):  # a snapshot that never got renamed into place
                path.unlink()
                removed.append(name)
            elif m := _SEGMENT_RE.match(name):
                segments.append((int(m.group(1)), path))
            elif m := _SNAPSHOT_RE.match(name):
                snapshots.append((int(m.group(1)), path))
        segments.sort()
        snapshots.sort(reverse=True)

        # 1. The newest snapshot that reads back whole.
        base_seq = 0
        damaged: list[str] = []
        for seq, path in snapshots:
            try:
                self._load_snapshot(path, seq)
            except _Damaged as exc:
                damaged.append(f"{path.name}: {exc}")
                self._clear_state()
                continue
            base_seq = seq
            break
        if damaged and base_seq == 0 and not (segments and segments[0][0] == 1):
            raise StoreCorrupted(
                f"{self.directory}: no usable snapshot ({'; '.join(damaged)}) and the log does not start "
                "at commit 1, so the state cannot be rebuilt; restore the directory from a backup"
            )

        # 2. Segments: skip those the snapshot holds entirely, replay the rest in order.
        live: list[tuple[int, Path]] = []
        for i, (first, path) in enumerate(segments):
            if i + 1 < len(segments) and segments[i + 1][0] <= base_seq + 1:
                removed.append(path.name)
                path.unlink()
            else:
                live.append((first, path))
        if live and live[0][0] > base_seq + 1:
            raise StoreCorrupted(
                f"{live[0][1]}: the log starts at commit {live[0][0]} but the state before it "
                f"(commits {base_seq + 1}..{live[0][0] - 1}) is in no snapshot; restore from a backup"
            )
        last_seq = base_seq
        prev_last: int | None = None
        replayed = 0
        truncated: tuple[str, int, str] | None = None
        kept: list[tuple[Path, int, int]] = []  # (path, size, last seq in it)
        for i, (first, path) in enumerate(live):
            is_last = i == len(live) - 1
            if prev_last is not None and first != prev_last + 1:
                raise StoreCorrupted(
                    f"{path}: starts at commit {first}, but the previous segment ends at commit {prev_last}"
                )
            buf = path.read_bytes()
            try:
                header_seq = decode_file_header(buf, SEGMENT_MAGIC)
            except BadHeader as exc:
                if is_last and len(buf) <= FILE_HEADER_BYTES:
                    # Crash while creating the segment: it never held a record.
                    path.unlink()
                    removed.append(path.name)
                    continue
                raise StoreCorrupted(f"{path}: {exc}") from None
            if header_seq != first:
                raise StoreCorrupted(f"{path}: header says commit {header_seq}, the name says {first}")
            expected = first
            size = len(buf)
            for offset, payload, error in iter_records(buf, FILE_HEADER_BYTES):
                if error is not None:
                    if not is_last:
                        raise StoreCorrupted(
                            f"{path}: damaged record at offset {offset} ({error}). This is not the last "
                            "segment, so the commits after it cannot be read: restore from a backup, or "
                            "move this and all later segments aside to accept losing them"
                        )
                    truncated = (path.name, size - offset, error)
                    self._truncate(path, offset)
                    size = offset
                    break
                seq = self._replay_commit(path, offset, payload, expected, base_seq)
                if seq > base_seq:
                    replayed += 1
                    last_seq = seq
                expected = seq + 1
            prev_last = expected - 1
            kept.append((path, size, prev_last))
        self._commit_seq = self._durable_seq = max(base_seq, last_seq)

        # 3. Keep only segments with commits after the snapshot; reopen the last one for appending.
        for path, size, seg_last in kept:
            if seg_last <= base_seq and base_seq > 0:
                path.unlink()
                removed.append(path.name)
            else:
                self._segments.append(path)
                self._log_bytes += size
        if self._segments and kept[-1][0] == self._segments[-1] and kept[-1][1] < self.segment_bytes:
            self._segment = open(self._segments[-1], "ab", buffering=0)
            self._segment_size = kept[-1][1]
        for seq, path in snapshots:
            if seq < base_seq:
                path.unlink()
                removed.append(path.name)
            elif seq > base_seq:  # damaged and unusable: keep it for inspection, out of the way
                path.rename(path.with_name(path.name + ".damaged"))
                removed.append(path.name)
        if self.fsync is not FsyncMode.OFF:
            if self._segment is not None:  # what a killed process left in the page cache
                self._fsync(self._segment.fileno())
            if removed or truncated:
                self._fsync_directory()
        return RecoveryReport(
            snapshot_seq=base_seq,
            commit_seq=self._commit_seq,
            segments_replayed=len(kept),
            commits_replayed=replayed,
            truncated_segment=truncated[0] if truncated else None,
            truncated_bytes=truncated[1] if truncated else 0,
            damage=truncated[2] if truncated else None,
            removed_files=tuple(removed),
        )

    def _truncate(self, path: Path, size: int) -> None:
        os.truncate(path, size)
        if self.fsync is not FsyncMode.OFF:
            fd = os.open(path, os.O_RDONLY)
            try:
                self._fsync(fd)
            finally:
                os.close(fd)

    def _replay_commit(self, path: Path, offset: int, payload: Any, expected: int, base_seq: int) -> int:
        """Apply one commit record (unless the snapshot already holds it); return its sequence number."""
        try:
            seq, ops = _unpack(payload)
        except (ValueError, TypeError) as exc:
            raise StoreCorrupted(f"{path}: record at offset {offset} is not a commit: {exc}") from None
        if seq != expected:
            raise StoreCorrupted(f"{path}: record at offset {offset} is commit {seq}, expected {expected}")
        if seq <= base_seq:
            return seq
        try:
            for op in ops:
                self._replay_op(op)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise StoreCorrupted(
                f"{path}: commit {seq} at offset {offset} has a malformed op: {exc!r}"
            ) from None
        except _Damaged as exc:
            raise StoreCorrupted(f"{path}: commit {seq} at offset {offset}: {exc}") from None
        return seq

    def _replay_op(self, op: list[Any]) -> None:
        kind = op[0]
        if kind == "d":
            _, sid, name, version, sets, deletes = op
            part = self._current(sid, name, version)
            if part is None:
                self._put_partition(sid, name, version, {}, 1, journal=False)
                part = self._sessions[sid].partitions[name]
            data = part.data
            body = part.nbytes - map_header_bytes(len(data))
            for key in deletes:
                if key in data:
                    body -= entry_bytes(key, data.pop(key))
            for key, value in sets.items():
                if key in data:
                    body -= entry_bytes(key, data[key])
                data[key] = value
                body += entry_bytes(key, value)
            nbytes = map_header_bytes(len(data)) + body
            self._data_bytes += nbytes - part.nbytes
            part.nbytes = nbytes
            part.version = version
        elif kind == "s":
            _, sid, name, version, data = op
            self._current(sid, name, version)
            self._put_partition(sid, name, version, data, len(_packb(data)), journal=False)
        elif kind == "t":
            _, sid, last_active_s = op
            if sid in self._sessions:
                self._stamp(sid, float(last_active_s))
        elif kind == "x":
            if op[1] in self._sessions:
                self._drop_session(op[1])
        else:
            raise ValueError(f"unknown op {kind!r}")

    def _current(self, sid: str, name: str, version: int) -> Any:
        session = self._sessions.get(sid)
        part = session.partitions.get(name) if session is not None else None
        current = part.version if part is not None else 0
        if version != current + 1:
            raise _Damaged(f"partition {name!r} of session {sid!r} goes from version {current} to {version}")
        return part
