"""The envelope dialect's messages and their msgpack codec (docs/protocol.md).

Every envelope is one msgpack map inside one frame (``replay.frames``: 4-byte big-endian length).  This
module is sans-IO and shared by both ends: the proxy encodes ``Attach``/``Req``/... and decodes what
backends send; the SDK (``replay.sdk``) does the opposite.

Rules
-----
- **Decoding validates every field** the protocol defines: presence, msgpack type (a ``bool`` is not an
  integer, ``str`` is not ``bin``), ranges (integers are unsigned 64-bit; ``seq`` of a request and ``v``
  of a delta start at 1), names (session ids, partition names, partition keys; docs/protocol.md,
  "Names and values").  Anything wrong raises ``EnvelopeError`` with the field's path in the message;
  no ``KeyError``/``TypeError``/``UnicodeDecodeError`` escapes.  Unknown keys are ignored and an
  unknown ``t`` is an error (docs/protocol.md, "Framing").
- **Encoding trusts its caller** for types (the dataclasses are built by our own code), so the hot path
  (``Req``/``Res``) costs one dict and one ``msgpack.packb``.  A value msgpack cannot encode raises
  ``EnvelopeError``.
- Values inside partition data (``data``, delta ``set``) are any msgpack value except ext types;
  msgpack-python always turns the timestamp ext (-1) into ``msgpack.Timestamp``, which the canonical
  digest (``replay.canonical``) then refuses, so it cannot slip into a partition unnoticed.
- Decoded objects share the decoded maps and lists (no defensive copies): the receiver owns them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import msgpack

from replay.frames import DEFAULT_MAX_FRAME_BYTES, FrameTooLarge
from replay.store.base import PartitionState

__all__ = [
    "BAD_ENVELOPE",
    "BAD_SEQ",
    "BAD_STATE",
    "EMPTY",
    "ERROR_CODES",
    "FRAME_TOO_LARGE",
    "RESTORE_DELTAS",
    "STALE_EPOCH",
    "UNKNOWN_SESSION",
    "Ack",
    "Attach",
    "Attached",
    "BackendEnvelope",
    "Delta",
    "Envelope",
    "EnvelopeError",
    "Error",
    "Fence",
    "Fenced",
    "Missing",
    "PartitionState",
    "ProxyEnvelope",
    "Push",
    "Release",
    "Req",
    "Res",
    "Restore",
    "RestoreDelta",
    "Restored",
    "decode",
    "decode_from_backend",
    "decode_from_proxy",
    "encode",
    "encode_frame",
    "validate_partition_name",
    "validate_sid",
]

# --- error codes (docs/protocol.md, "Errors") -------------------------------------------------------

BAD_ENVELOPE = "bad_envelope"  # undecodable, a field missing or of the wrong type, unknown ``t``
FRAME_TOO_LARGE = "frame_too_large"  # a frame above max_frame_bytes
UNKNOWN_SESSION = "unknown_session"  # an envelope that needs a session on a connection without one
STALE_EPOCH = "stale_epoch"  # epoch below the highest seen for the session
BAD_SEQ = "bad_seq"  # a req whose seq is not the one expected
BAD_STATE = "bad_state"  # an envelope not allowed now (attach for another sid, restore after fence)
ERROR_CODES = frozenset({BAD_ENVELOPE, FRAME_TOO_LARGE, UNKNOWN_SESSION, STALE_EPOCH, BAD_SEQ, BAD_STATE})

# --- features a backend advertises in ``attached`` (docs/protocol.md, "attached") ---------------------

RESTORE_DELTAS = "restore_deltas"  # applies ``restore`` deltas (``deltas`` next to ``state``)

MAX_UINT64 = (1 << 64) - 1
MAX_SID_BYTES = 128
MAX_PARTITION_NAME_BYTES = 64
MAX_CLIENT_IP_CHARS = 64  # attach.client's ip: an IPv6 address with a zone index fits

# Same rule as the partition store (replay/store/base.py): names travel in admin URLs and config files.
_PARTITION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
# Session ids reach logs and URL path segments: no control characters, no '/'.
_SID_BAD_RE = re.compile(r"[\x00-\x1f\x7f-\x9f/]")
_KEY_TYPES = frozenset({str, int, bytes})


class EnvelopeError(ValueError):
    """A malformed envelope (the peer's fault): the connection is closed with ``bad_envelope``."""

    code = BAD_ENVELOPE


class _EmptyMapping(Mapping[Any, Any]):
    """An immutable, hashable empty mapping: the default of every optional map field."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> NoReturn:
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


EMPTY: Mapping[Any, Any] = _EmptyMapping()


# --- partition payloads -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delta:
    """One partition's change: ``version`` = previous version + 1.

    Either key-wise (``set_`` and ``delete``) or, with ``data`` given, a full replacement; never both
    (docs/protocol.md, "Partition data, deltas and digests").  Field names follow
    ``PartitionStore.apply_delta`` / ``set_partition_data``.
    """

    version: int
    set_: Mapping[Any, Any] = EMPTY
    delete: tuple[Any, ...] = ()
    data: Mapping[Any, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        if self.data is not None:
            return {"v": self.version, "data": _plain(self.data)}
        wire: dict[str, Any] = {"v": self.version}
        if self.set_:
            wire["set"] = _plain(self.set_)
        if self.delete:
            wire["del"] = self.delete
        return wire


@dataclass(frozen=True, slots=True)
class RestoreDelta:
    """One partition's change in a ``restore``: applied to version ``base`` it gives ``version``.

    ``version`` > ``base`` (several versions at once); key-wise only (``set_`` and ``delete``, never a
    full ``data``: that is what ``Restore.state`` is for).  The receiver must hold exactly version
    ``base`` (docs/protocol.md, "restore").
    """

    base: int
    version: int
    set_: Mapping[Any, Any] = EMPTY
    delete: tuple[Any, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"from": self.base, "v": self.version}
        if self.set_:
            wire["set"] = _plain(self.set_)
        if self.delete:
            wire["del"] = self.delete
        return wire


# --- proxy -> backend -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attach:
    TYPE: ClassVar[str] = "attach"
    sid: str
    epoch: int
    state: Mapping[str, PartitionState]
    next_seq: int = 1
    requires_ack: bool = False
    token: str | None = None  # the session's token when the proxy issued the id (replay.tokens)
    client: tuple[str, int] | None = None  # the client's (ip, port) as the proxy sees it

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "t": "attach",
            "sid": self.sid,
            "epoch": self.epoch,
            "state": _state_wire(self.state),
            "next_seq": self.next_seq,
        }
        if self.requires_ack:
            wire["requires_ack"] = True
        if self.token is not None:
            wire["token"] = self.token
        if self.client is not None:
            wire["client"] = [self.client[0], self.client[1]]
        return wire


@dataclass(frozen=True, slots=True)
class Req:
    TYPE: ClassVar[str] = "req"
    seq: int
    body: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"t": "req", "seq": self.seq, "body": self.body}


@dataclass(frozen=True, slots=True)
class Restore:
    TYPE: ClassVar[str] = "restore"
    epoch: int
    state: Mapping[str, PartitionState]
    # Partitions sent as a delta from a version the backend holds; only to a backend that advertised
    # ``restore_deltas``.  A partition is in ``state`` or in ``deltas``, never both.
    deltas: Mapping[str, RestoreDelta] = EMPTY

    def to_wire(self) -> dict[str, Any]:
        wire = {"t": "restore", "epoch": self.epoch, "state": _state_wire(self.state)}
        if self.deltas:
            wire["deltas"] = {name: d.to_wire() for name, d in self.deltas.items()}
        return wire


@dataclass(frozen=True, slots=True)
class Fence:
    TYPE: ClassVar[str] = "fence"
    epoch: int

    def to_wire(self) -> dict[str, Any]:
        return {"t": "fence", "epoch": self.epoch}


@dataclass(frozen=True, slots=True)
class Release:
    TYPE: ClassVar[str] = "release"
    epoch: int

    def to_wire(self) -> dict[str, Any]:
        return {"t": "release", "epoch": self.epoch}


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    seq: int

    def to_wire(self) -> dict[str, Any]:
        return {"t": "ack", "seq": self.seq}


# --- backend -> proxy -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attached:
    TYPE: ClassVar[str] = "attached"
    sid: str
    epoch: int
    digests: Mapping[str, int]
    versions: Mapping[str, int] = EMPTY
    requires: tuple[str, ...] = ()
    features: tuple[str, ...] = ()  # optional protocol features the backend supports (RESTORE_DELTAS)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "t": "attached",
            "sid": self.sid,
            "epoch": self.epoch,
            "digests": _plain(self.digests),
        }
        if self.versions:
            wire["versions"] = _plain(self.versions)
        if self.requires:
            wire["requires"] = list(self.requires)
        if self.features:
            wire["features"] = list(self.features)
        return wire


@dataclass(frozen=True, slots=True)
class Res:
    TYPE: ClassVar[str] = "res"
    seq: int
    body: bytes | None = None
    deltas: Mapping[str, Delta] = EMPTY

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": "res", "seq": self.seq}
        if self.body is not None:
            wire["body"] = self.body
        if self.deltas:
            wire["deltas"] = _deltas_wire(self.deltas)
        return wire


@dataclass(frozen=True, slots=True)
class Push:
    TYPE: ClassVar[str] = "push"
    body: bytes
    deltas: Mapping[str, Delta] = EMPTY

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": "push", "body": self.body}
        if self.deltas:
            wire["deltas"] = _deltas_wire(self.deltas)
        return wire


@dataclass(frozen=True, slots=True)
class Missing:
    TYPE: ClassVar[str] = "missing"
    seq: int
    partitions: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"t": "missing", "seq": self.seq, "partitions": list(self.partitions)}


@dataclass(frozen=True, slots=True)
class Restored:
    TYPE: ClassVar[str] = "restored"
    epoch: int
    digests: Mapping[str, int]
    versions: Mapping[str, int] = EMPTY

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": "restored", "epoch": self.epoch, "digests": _plain(self.digests)}
        if self.versions:
            wire["versions"] = _plain(self.versions)
        return wire


@dataclass(frozen=True, slots=True)
class Fenced:
    TYPE: ClassVar[str] = "fenced"
    epoch: int
    last_seq: int
    deltas: Mapping[str, Delta] = EMPTY

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": "fenced",
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            "deltas": _deltas_wire(self.deltas),
        }


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str = ""
    seq: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": "error", "code": self.code, "message": self.message}
        if self.seq is not None:
            wire["seq"] = self.seq
        return wire


ProxyEnvelope = Attach | Req | Restore | Fence | Release | Ack
BackendEnvelope = Attached | Res | Push | Missing | Restored | Fenced | Error
Envelope = ProxyEnvelope | BackendEnvelope


def _plain(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    return mapping if type(mapping) is dict else dict(mapping)  # type: ignore[return-value]


def _state_wire(state: Mapping[str, PartitionState]) -> dict[str, Any]:
    return {name: {"v": ps.version, "data": _plain(ps.data)} for name, ps in state.items()}


def _deltas_wire(deltas: Mapping[str, Delta]) -> dict[str, Any]:
    return {name: d.to_wire() for name, d in deltas.items()}


# --- encoding ---------------------------------------------------------------------------------------


def encode(envelope: Envelope) -> bytes:
    """The msgpack map of ``envelope`` (without the frame header)."""
    try:
        return msgpack.packb(envelope.to_wire(), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EnvelopeError(f"cannot encode {envelope.TYPE}: {exc}") from None


def encode_frame(envelope: Envelope, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """``envelope`` as one frame: 4-byte big-endian length, then the msgpack map.

    Raises ``FrameTooLarge`` if the encoded envelope exceeds ``max_frame_bytes``.
    """
    payload = encode(envelope)
    n = len(payload)
    if n > max_frame_bytes:
        raise FrameTooLarge(n, max_frame_bytes)
    return n.to_bytes(4, "big") + payload


# --- decoding ---------------------------------------------------------------------------------------

_MISSING: Any = object()


def _fail(where: str, what: str) -> NoReturn:
    raise EnvelopeError(f"{where}: {what}")


def _describe(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _ensure_map(value: Any, where: str) -> dict[Any, Any]:
    if type(value) is not dict:
        _fail(where, f"expected a map, got {_describe(value)}")
    return value


def _uint(m: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
    value = m.get(key, _MISSING)
    if type(value) is not int or not minimum <= value <= MAX_UINT64:
        _fail(f"{where}.{key}", f"expected an integer >= {minimum}, got {_describe(value)}")
    return value


def _uint_value(value: Any, where: str, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= MAX_UINT64:
        _fail(where, f"expected an integer >= {minimum}, got {_describe(value)}")
    return value


def _bin(m: dict[str, Any], key: str, where: str) -> bytes:
    value = m.get(key, _MISSING)
    if type(value) is not bytes:
        _fail(f"{where}.{key}", f"expected bin, got {_describe(value)}")
    return value


def validate_sid(value: Any, where: str = "sid") -> str:
    """A session id: str of 1..128 UTF-8 bytes, no control characters, no '/'."""
    if type(value) is not str or not value:
        _fail(where, f"expected a non-empty str, got {_describe(value)}")
    if len(value) > MAX_SID_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_SID_BYTES:
        _fail(where, f"longer than {MAX_SID_BYTES} bytes")
    if _SID_BAD_RE.search(value):
        _fail(where, "contains '/' or a control character")
    return value


def validate_partition_name(value: Any, where: str = "partition") -> str:
    """A partition name: 1..64 characters of A-Z a-z 0-9 _ . - , not starting with '.' or '-'."""
    if type(value) is not str or len(value) > MAX_PARTITION_NAME_BYTES or not _PARTITION_RE.match(value):
        _fail(
            where,
            f"partition names are 1-{MAX_PARTITION_NAME_BYTES} characters of A-Z a-z 0-9 _ . - "
            f"not starting with '.' or '-', got {_describe(value)}",
        )
    return value


def _check_keys(keys: Any, where: str) -> None:
    key_types = _KEY_TYPES
    for k in keys:
        if type(k) not in key_types:
            _fail(where, f"partition keys must be str, int or bin, got {_describe(k)}")


def _data(value: Any, where: str) -> dict[Any, Any]:
    data = _ensure_map(value, where)
    _check_keys(data, where)
    return data


def _state(m: dict[str, Any], key: str, where: str) -> dict[str, PartitionState]:
    where = f"{where}.{key}"
    raw = _ensure_map(m.get(key, _MISSING), where)
    out: dict[str, PartitionState] = {}
    for name, ps in raw.items():
        at = f"{where}[{name!r}]"
        validate_partition_name(name, at)
        ps = _ensure_map(ps, at)
        out[name] = PartitionState(_uint(ps, "v", at), _data(ps.get("data", _MISSING), f"{at}.data"))
    return out


def _delta(value: Any, where: str) -> Delta:
    d = _ensure_map(value, where)
    version = _uint(d, "v", where, 1)
    data = d.get("data", _MISSING)
    set_ = d.get("set", _MISSING)
    delete = d.get("del", _MISSING)
    if data is not _MISSING:
        if set_ is not _MISSING or delete is not _MISSING:
            _fail(where, "a delta carries either data or set/del, not both")
        return Delta(version, data=_data(data, f"{where}.data"))
    set_ = EMPTY if set_ is _MISSING else _data(set_, f"{where}.set")
    return Delta(version, set_, _dels(delete, where))


def _dels(delete: Any, where: str) -> tuple[Any, ...]:
    """A delta's ``del`` (absent: none)."""
    if delete is _MISSING:
        return ()
    if type(delete) is not list:
        _fail(f"{where}.del", f"expected an array, got {_describe(delete)}")
    _check_keys(delete, f"{where}.del")
    return tuple(delete)


def _restore_delta(value: Any, where: str) -> RestoreDelta:
    d = _ensure_map(value, where)
    base = _uint(d, "from", where)
    version = _uint(d, "v", where, 1)
    if version <= base:
        _fail(f"{where}.v", f"expected an integer above 'from' ({base}), got {version}")
    if "data" in d:
        _fail(where, "a restore delta carries set/del, not data (a full state goes in restore.state)")
    set_ = d.get("set", _MISSING)
    set_ = EMPTY if set_ is _MISSING else _data(set_, f"{where}.set")
    dels = _dels(d.get("del", _MISSING), where)
    if set_ and any(k in set_ for k in dels):
        _fail(where, "names the same key in both set and del")
    return RestoreDelta(base, version, set_, dels)


def _deltas(m: dict[str, Any], where: str) -> Mapping[str, Delta]:
    raw = m.get("deltas", _MISSING)
    if raw is _MISSING:
        return EMPTY
    where = f"{where}.deltas"
    raw = _ensure_map(raw, where)
    out: dict[str, Delta] = {}
    for name, d in raw.items():
        at = f"{where}[{name!r}]"
        validate_partition_name(name, at)
        out[name] = _delta(d, at)
    return out


def _uint_map(m: dict[str, Any], key: str, where: str, required: bool) -> Mapping[str, int]:
    raw = m.get(key, _MISSING)
    if raw is _MISSING and not required:
        return EMPTY
    where = f"{where}.{key}"
    raw = _ensure_map(raw, where)
    for name, value in raw.items():
        validate_partition_name(name, f"{where}[{name!r}]")
        _uint_value(value, f"{where}[{name!r}]")
    return raw


def _names(value: Any, where: str, *, non_empty: bool) -> tuple[str, ...]:
    if type(value) is not list or (non_empty and not value):
        _fail(
            where,
            f"expected a {'non-empty ' if non_empty else ''}array of partition names, got {_describe(value)}",
        )
    for i, name in enumerate(value):
        validate_partition_name(name, f"{where}[{i}]")
    if len(set(value)) != len(value):
        _fail(where, "names a partition twice")
    return tuple(value)


def _d_attach(m: dict[str, Any]) -> Attach:
    requires_ack = m.get("requires_ack", False)
    if type(requires_ack) is not bool:
        _fail("attach.requires_ack", f"expected a bool, got {_describe(requires_ack)}")
    token = m.get("token")
    if token is not None and (type(token) is not str or not 0 < len(token) <= 128):
        _fail("attach.token", f"expected a str of 1 to 128 characters, got {_describe(token)}")
    client = m.get("client", _MISSING)
    if client is _MISSING:
        client = None
    elif (
        type(client) is not list
        or len(client) != 2
        or type(client[0]) is not str
        or not 0 < len(client[0]) <= MAX_CLIENT_IP_CHARS
        or type(client[1]) is not int
        or not 0 <= client[1] <= 0xFFFF
    ):
        _fail(
            "attach.client",
            f"expected [ip (a str of 1 to {MAX_CLIENT_IP_CHARS} characters), port (0 to 65535)], "
            f"got {_describe(client)}",
        )
    else:
        client = (client[0], client[1])
    return Attach(
        validate_sid(m.get("sid", _MISSING), "attach.sid"),
        _uint(m, "epoch", "attach"),
        _state(m, "state", "attach"),
        _uint(m, "next_seq", "attach", 1),
        requires_ack,
        token,
        client,
    )


def _d_req(m: dict[str, Any]) -> Req:
    return Req(_uint(m, "seq", "req", 1), _bin(m, "body", "req"))


def _d_restore(m: dict[str, Any]) -> Restore:
    epoch = _uint(m, "epoch", "restore")
    state = _state(m, "state", "restore")
    raw = m.get("deltas", _MISSING)
    if raw is _MISSING:
        return Restore(epoch, state)
    raw = _ensure_map(raw, "restore.deltas")
    deltas: dict[str, RestoreDelta] = {}
    for name, d in raw.items():
        at = f"restore.deltas[{name!r}]"
        validate_partition_name(name, at)
        if name in state:
            _fail(at, "the partition is also in restore.state")
        deltas[name] = _restore_delta(d, at)
    return Restore(epoch, state, deltas)


def _d_fence(m: dict[str, Any]) -> Fence:
    return Fence(_uint(m, "epoch", "fence"))


def _d_release(m: dict[str, Any]) -> Release:
    return Release(_uint(m, "epoch", "release"))


def _d_ack(m: dict[str, Any]) -> Ack:
    return Ack(_uint(m, "seq", "ack"))


def _d_attached(m: dict[str, Any]) -> Attached:
    requires = m.get("requires", _MISSING)
    features = m.get("features", _MISSING)
    if features is _MISSING:
        features = ()
    else:
        # Unknown features are kept (and ignored by the proxy): only the type is checked.
        if type(features) is not list or any(type(f) is not str for f in features):
            _fail("attached.features", f"expected an array of str, got {_describe(features)}")
        features = tuple(features)
    return Attached(
        validate_sid(m.get("sid", _MISSING), "attached.sid"),
        _uint(m, "epoch", "attached"),
        _uint_map(m, "digests", "attached", True),
        _uint_map(m, "versions", "attached", False),
        () if requires is _MISSING else _names(requires, "attached.requires", non_empty=False),
        features,
    )


def _d_res(m: dict[str, Any]) -> Res:
    body = m.get("body")
    if body is not None and type(body) is not bytes:
        _fail("res.body", f"expected bin, got {_describe(body)}")
    return Res(_uint(m, "seq", "res", 1), body, _deltas(m, "res"))


def _d_push(m: dict[str, Any]) -> Push:
    return Push(_bin(m, "body", "push"), _deltas(m, "push"))


def _d_missing(m: dict[str, Any]) -> Missing:
    return Missing(
        _uint(m, "seq", "missing", 1),
        _names(m.get("partitions", _MISSING), "missing.partitions", non_empty=True),
    )


def _d_restored(m: dict[str, Any]) -> Restored:
    return Restored(
        _uint(m, "epoch", "restored"),
        _uint_map(m, "digests", "restored", True),
        _uint_map(m, "versions", "restored", False),
    )


def _d_fenced(m: dict[str, Any]) -> Fenced:
    return Fenced(_uint(m, "epoch", "fenced"), _uint(m, "last_seq", "fenced"), _deltas(m, "fenced"))


def _d_error(m: dict[str, Any]) -> Error:
    code = m.get("code", _MISSING)
    if type(code) is not str or not code:
        _fail("error.code", f"expected a non-empty str, got {_describe(code)}")
    message = m.get("message", "")
    if type(message) is not str:
        _fail("error.message", f"expected a str, got {_describe(message)}")
    seq = m.get("seq")
    if seq is not None:
        _uint_value(seq, "error.seq")
    return Error(code, message, seq)


_FROM_PROXY: dict[str, Callable[[dict[str, Any]], Any]] = {
    "attach": _d_attach,
    "req": _d_req,
    "restore": _d_restore,
    "fence": _d_fence,
    "release": _d_release,
    "ack": _d_ack,
}
_FROM_BACKEND: dict[str, Callable[[dict[str, Any]], Any]] = {
    "attached": _d_attached,
    "res": _d_res,
    "push": _d_push,
    "missing": _d_missing,
    "restored": _d_restored,
    "fenced": _d_fenced,
    "error": _d_error,
}
_ANY = {**_FROM_PROXY, **_FROM_BACKEND}


def _reject_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"ext type {code} is not allowed")


def _decode(
    payload: bytes | bytearray | memoryview, table: dict[str, Callable[[dict[str, Any]], Any]], side: str
) -> Any:
    try:
        m = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_reject_ext)
    except Exception as exc:  # msgpack raises ValueError, TypeError (unhashable key), UnicodeDecodeError, ...
        raise EnvelopeError(f"not a msgpack envelope: {type(exc).__name__}: {exc}") from None
    if type(m) is not dict:
        _fail("envelope", f"expected a map, got {_describe(m)}")
    t = m.get("t", _MISSING)
    decoder = table.get(t) if type(t) is str else None
    if decoder is None:
        if type(t) is str and t in _ANY:
            _fail("envelope.t", f"{t!r} is not sent {side}")
        _fail("envelope.t", f"unknown envelope type {_describe(t)}")
    return decoder(m)


def decode(payload: bytes | bytearray | memoryview) -> Envelope:
    """Any envelope, either direction.  Raises ``EnvelopeError``."""
    return _decode(payload, _ANY, "")


def decode_from_proxy(payload: bytes | bytearray | memoryview) -> ProxyEnvelope:
    """An envelope the proxy sends to a backend (what the SDK reads).  Raises ``EnvelopeError``."""
    return _decode(payload, _FROM_PROXY, "by the proxy")


def decode_from_backend(payload: bytes | bytearray | memoryview) -> BackendEnvelope:
    """An envelope a backend sends to the proxy (what the proxy reads).  Raises ``EnvelopeError``."""
    return _decode(payload, _FROM_BACKEND, "by a backend")
