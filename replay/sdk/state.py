"""Session state with change tracking: what a handler sees as ``session.state`` (sans-IO).

Theory of operation
-------------------
``session.state[partition]`` is a :class:`Partition`, a ``MutableMapping`` over the partition's data
dict.  Every change is reported to the proxy as a *delta* (docs/protocol.md, "Partition data, deltas
and digests") on the next ``res``, ``push`` or ``fenced``, and each partition's version rises by 1 per
report that changes it, so "one request that changes a partition" is "one version".

Two kinds of change are tracked:

- **writes** (``p[k] = v``, ``del p[k]``, and every mixin built on them: ``pop``, ``update``,
  ``setdefault``, ``clear``): the key is marked dirty; at report time its current value (or its
  absence) goes into the delta;
- **in-place changes of mutable values** (``p["items"].append(x)``): reading a value that is not an
  immutable scalar through the mapping takes a msgpack snapshot of it (once per report period); at
  report time the value is packed again and reported if the bytes differ.  A read-only request
  therefore reports nothing and keeps its versions, at the cost of two ``msgpack.packb`` per mutable
  value it reads.

Requests are atomic with respect to state.  While a request is being applied an *undo log* records,
for every key it touches first, the value before the request (the object for immutable values, the
snapshot bytes for mutable ones) and the key's tracking flags.  If the request ends in ``missing``
(it touched a partition this backend does not hold) or its handler raises, ``rollback()`` restores
every touched key, so nothing of it is applied or reported (docs/sdk.md, "Handler rules").

Rules
-----
- ``session.state[p]`` for a partition not held raises :class:`MissingPartition` and, inside a
  request, records ``p``; the SDK answers ``missing`` even if the handler caught the exception.
- After a fence or release the state is frozen: writes raise :class:`SessionFrozen`.
- Loading (attach/restore) replaces a partition's data and version in the existing ``Partition``
  object (references a handler holds stay valid) and drops its unreported changes: the proxy's copy
  is authoritative.  A ``restore`` delta changes the held data in place, from exactly the version the
  proxy names and only when nothing about the partition is unreported (``pending``).
- Partition keys are ``str``, ``int`` or ``bytes`` (docs/protocol.md, "Names and values").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import msgpack

from replay.canonical import digest
from replay.envelope import Delta, EnvelopeError, validate_partition_name

__all__ = ["MissingPartition", "Partition", "SessionFrozen", "SessionState", "StateError"]

# Values of these exact types cannot change in place: reading them needs no snapshot.
_IMMUTABLE = frozenset({int, float, str, bytes, bool, type(None)})
_KEY_TYPES = frozenset({str, int, bytes})
_ABSENT: Any = object()


class MissingPartition(Exception):
    """The handler touched a partition this backend does not hold (yet).

    Raised by ``session.state[name]``.  The SDK rolls the request back and answers ``missing``; the
    proxy restores the partition and sends the request again.  Do not catch it (the SDK answers
    ``missing`` anyway if you do).
    """

    def __init__(self, partition: str) -> None:
        self.partition = partition
        super().__init__(f"partition {partition!r} is not held by this backend for this session")


class SessionFrozen(RuntimeError):
    """A change to session state after the session was fenced, released or closed on this backend."""


class StateError(TypeError):
    """A value that the envelope dialect cannot carry (a non-msgpack value, a bad key type)."""


def _pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StateError(f"session state holds a value msgpack cannot encode: {exc}") from None


def _unpack(packed: bytes) -> Any:
    return msgpack.unpackb(packed, raw=False, strict_map_key=False)


class Partition(MutableMapping[Any, Any]):
    """One partition's data.  Behaves like a dict; changes are tracked (see the module docstring)."""

    __slots__ = ("_data", "_digest", "_dirty", "_snap", "_state", "name", "version")

    def __init__(self, state: SessionState, name: str, version: int, data: dict[Any, Any]) -> None:
        self._state = state
        self.name = name
        self.version = version
        self._data = data
        self._dirty: set[Any] = set()  # keys written since the last report
        self._snap: dict[Any, bytes] = {}  # mutable values read since the last report, packed
        self._digest: int | None = None  # cached digest of the data; None once it may have changed

    # -- reads ------------------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = self._data[key]
        if type(value) not in _IMMUTABLE:
            self._read_mutable(key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Partition({self.name!r}, v={self.version}, {self._data!r})"

    def to_dict(self) -> dict[Any, Any]:
        """A deep, untracked copy of the data (e.g. to send it to the client)."""
        return _unpack(_pack(self._data))

    # -- writes -----------------------------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        if type(key) not in _KEY_TYPES:
            raise StateError(f"partition keys must be str, int or bytes, not {type(key).__name__}")
        self._write(key)
        self._data[key] = value

    def __delitem__(self, key: Any) -> None:
        if key not in self._data:
            raise KeyError(key)
        self._write(key)
        del self._data[key]

    def clear(self) -> None:
        for key in list(self._data):
            del self[key]

    # -- tracking ---------------------------------------------------------------------------------

    def _write(self, key: Any) -> None:
        state = self._state
        if state._frozen is not None:
            raise SessionFrozen(
                f"session state is read-only: the session was {state._frozen} on this backend"
            )
        undo = state._undo
        if undo is not None:
            ref = (self.name, key)
            if ref not in undo:
                before = self._data.get(key, _ABSENT)
                undo[ref] = (before, False, key in self._dirty, key in self._snap)
        self._dirty.add(key)
        self._digest = None
        state._touched.add(self.name)

    def _read_mutable(self, key: Any, value: Any) -> None:
        state = self._state
        if state._frozen is not None:
            return  # nothing is reported any more: no need to watch
        self._digest = None  # the caller may change the value in place
        snap = self._snap
        packed = snap.get(key)
        had_snap = packed is not None
        if packed is None:
            packed = snap[key] = _pack(value)
            state._touched.add(self.name)
        undo = state._undo
        if undo is not None:
            ref = (self.name, key)
            if ref not in undo:
                # The value as this request found it: the old snapshot may predate in-place changes
                # made outside any request since the last report.
                undo[ref] = (_pack(value) if had_snap else packed, True, key in self._dirty, had_snap)


class SessionState:
    """``session.state``: the partitions this backend holds for one session, by name.

    ``state[name]`` returns the :class:`Partition` or raises :class:`MissingPartition`;
    ``state[name] = mapping`` replaces a held partition's contents (tracked key by key);
    ``name in state``, ``iter(state)`` and ``len(state)`` look at held partitions only and never raise.
    """

    __slots__ = ("_frozen", "_missing", "_parts", "_touched", "_undo")

    def __init__(self) -> None:
        self._parts: dict[str, Partition] = {}
        self._touched: set[str] = set()  # partitions with dirty keys or snapshots
        self._undo: dict[tuple[str, Any], tuple[Any, bool, bool, bool]] | None = None
        self._missing: set[str] = set()
        self._frozen: str | None = None

    # -- the handler's view -----------------------------------------------------------------------

    def __getitem__(self, name: str) -> Partition:
        part = self._parts.get(name)
        if part is None:
            try:
                validate_partition_name(name)
            except EnvelopeError as exc:
                raise ValueError(str(exc)) from None
            if self._undo is not None:
                self._missing.add(name)
            raise MissingPartition(name)
        return part

    def __setitem__(self, name: str, data: Mapping[Any, Any]) -> None:
        part = self[name]
        for key in list(part._data):
            if key not in data:
                del part[key]
        for key, value in data.items():
            part[key] = value

    def __delitem__(self, name: str) -> None:
        raise TypeError("partitions cannot be deleted from a session; clear() the partition instead")

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def keys(self) -> list[str]:
        return list(self._parts)

    def versions(self) -> dict[str, int]:
        """Version of every held partition."""
        return {name: part.version for name, part in self._parts.items()}

    def __repr__(self) -> str:
        return f"SessionState({self._parts!r})"

    # -- SDK side ---------------------------------------------------------------------------------

    def load(self, name: str, version: int, data: dict[Any, Any], digest_: int | None = None) -> None:
        """Install a partition from ``attach``/``restore``; unreported changes to it are dropped.

        ``digest_`` is the digest of ``data`` if the caller computed it already.
        """
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = Partition(self, name, version, data)
        else:
            part._data = data
            part.version = version
            part._dirty = set()
            part._snap = {}
        part._digest = digest_

    def pending(self, name: str) -> bool:
        """Whether a held partition has changes not reported yet (what ``collect()`` would report)."""
        part = self._parts[name]
        if part._dirty:
            return True
        data = part._data
        for key, packed in part._snap.items():
            value = data.get(key, _ABSENT)
            if value is _ABSENT or _pack(value) != packed:
                return True
        return False

    def apply_delta(self, name: str, version: int, set_: Mapping[Any, Any], delete: Iterable[Any]) -> None:
        """Apply a ``restore`` delta to a held partition (the caller checked its version and that
        nothing is ``pending``): set and delete keys in place, adopt ``version``."""
        part = self._parts[name]
        data = part._data
        for key in delete:
            data.pop(key, None)
        data.update(set_)
        part.version = version
        part._digest = None
        if part._snap:
            part._snap = {}  # snapshots of values read before the delta: they may have been replaced

    def digest(self, name: str) -> int:
        """The digest of a held partition (docs/protocol.md), cached while the partition is untouched."""
        part = self._parts[name]
        cached = part._digest
        if cached is None:
            cached = part._digest = digest(part._data)
        return cached

    def begin(self) -> None:
        """A request starts: open the undo log."""
        self._undo = {}
        self._missing.clear()

    @property
    def in_request(self) -> bool:
        return self._undo is not None

    @property
    def missing(self) -> set[str]:
        """Partitions the current request touched but this backend does not hold."""
        return self._missing

    def end(self) -> None:
        """The request is applied and reported: forget its undo log."""
        self._undo = None

    def rollback(self) -> None:
        """Undo every change the current request made (and its tracking), then close the undo log."""
        undo = self._undo
        self._undo = None
        if not undo:
            return
        parts = self._parts
        for (name, key), (before, packed, was_dirty, had_snap) in undo.items():
            part = parts.get(name)
            if part is None:
                continue
            part._digest = None
            if before is _ABSENT:
                part._data.pop(key, None)
            else:
                part._data[key] = _unpack(before) if packed else before
            if not was_dirty:
                part._dirty.discard(key)
            if not had_snap:
                part._snap.pop(key, None)

    @property
    def has_changes(self) -> bool:
        return bool(self._touched)

    def collect(self) -> dict[str, Delta]:
        """The deltas of every change since the last report, with versions +1; nothing is committed.

        Written values are not checked here (encoding the envelope does that, once); ``StateError``
        comes only from comparing a value read for in-place changes that msgpack cannot encode.
        """
        deltas: dict[str, Delta] = {}
        if not self._touched:
            return deltas
        parts = self._parts
        for name in self._touched:
            part = parts.get(name)
            if part is None:
                continue
            data = part._data
            dirty = part._dirty
            changed: dict[Any, Any] = {}
            deleted: list[Any] = []
            for key in dirty:
                value = data.get(key, _ABSENT)
                if value is _ABSENT:
                    deleted.append(key)
                else:
                    changed[key] = value
            for key, packed in part._snap.items():
                if key not in dirty:
                    value = data.get(key, _ABSENT)
                    if value is _ABSENT:
                        deleted.append(key)
                    elif _pack(value) != packed:
                        changed[key] = value
            if changed or deleted:
                deltas[name] = Delta(part.version + 1, changed, tuple(deleted))
        return deltas

    def commit(self, deltas: Mapping[str, Delta]) -> None:
        """The deltas from ``collect()`` went out: adopt their versions and start a new period."""
        parts = self._parts
        for name in self._touched:
            part = parts.get(name)
            if part is not None:
                if part._dirty:
                    part._dirty = set()
                if part._snap:
                    part._snap = {}
        self._touched.clear()
        for name, delta in deltas.items():
            parts[name].version = delta.version

    def freeze(self, reason: str) -> None:
        """No more changes: ``reason`` ("fenced", "released", "closed") appears in the error."""
        self._frozen = reason

    def thaw(self) -> None:
        self._frozen = None

    @property
    def frozen(self) -> str | None:
        return self._frozen
