"""The envelope codec: every message both ways, and every malformed field refused with EnvelopeError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.envelope import (
    EMPTY,
    RESTORE_DELTAS,
    Ack,
    Attach,
    Attached,
    Delta,
    EnvelopeError,
    Error,
    Fence,
    Fenced,
    Missing,
    PartitionState,
    Push,
    Release,
    Req,
    Res,
    Restore,
    Restored,
    RestoreDelta,
    decode,
    decode_from_backend,
    decode_from_proxy,
    encode,
    encode_frame,
)
from replay.frames import FrameDecoder, FrameTooLarge

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
POS = st.integers(min_value=1, max_value=(1 << 64) - 1)
names = st.from_regex(r"[a-z_][a-z0-9_.\-]{0,10}", fullmatch=True)
sids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\x85"),
    min_size=1,
    max_size=32,
)
keys = st.one_of(
    st.text(max_size=8), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.binary(max_size=8)
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.binary(max_size=10),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)
data_maps = st.dictionaries(keys, values, max_size=5)
states = st.dictionaries(names, st.builds(PartitionState, U64, data_maps), max_size=3)
deltas_st = st.one_of(
    st.builds(lambda v, s, d: Delta(v, s, tuple(d)), POS, data_maps, st.lists(keys, max_size=3)),
    st.builds(lambda v, d: Delta(v, data=d), POS, data_maps),
)
delta_maps = st.dictionaries(names, deltas_st, max_size=3)
digest_maps = st.dictionaries(names, U64, max_size=3)
name_tuples = st.lists(names, min_size=1, max_size=4, unique=True).map(tuple)
restore_deltas_st = st.builds(
    lambda base, step, set_, dels: RestoreDelta(
        base, min(base + step, (1 << 64) - 1), set_, tuple(k for k in dels if k not in set_)
    ),
    st.integers(min_value=0, max_value=(1 << 64) - 2),
    POS,
    data_maps,
    st.lists(keys, max_size=3),
)
restores = st.builds(
    lambda epoch, state, deltas: Restore(epoch, state, {n: d for n, d in deltas.items() if n not in state}),
    U64,
    states,
    st.dictionaries(names, restore_deltas_st, max_size=3),
)
features_st = st.lists(st.text(max_size=16), max_size=3).map(tuple)
tokens_st = st.none() | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=128)
clients_st = st.none() | st.tuples(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64)
    | st.ip_addresses().map(str),
    st.integers(min_value=0, max_value=65535),
)

from_proxy = st.one_of(
    st.builds(Attach, sids, U64, states, POS, st.booleans(), tokens_st, clients_st),
    st.builds(Req, POS, st.binary(max_size=50)),
    st.builds(Restore, U64, states),
    restores,
    st.builds(Fence, U64),
    st.builds(Release, U64),
    st.builds(Ack, U64),
)
from_backend = st.one_of(
    st.builds(
        Attached,
        sids,
        U64,
        digest_maps,
        digest_maps,
        st.lists(names, max_size=3, unique=True).map(tuple),
        features_st,
    ),
    st.builds(Res, POS, st.none() | st.binary(max_size=50), delta_maps),
    st.builds(Push, st.binary(max_size=50), delta_maps),
    st.builds(Missing, POS, name_tuples),
    st.builds(Restored, U64, digest_maps, digest_maps),
    st.builds(Fenced, U64, U64, delta_maps),
    st.builds(Error, st.text(min_size=1, max_size=10), st.text(max_size=20), st.none() | U64),
)


@settings(max_examples=50, deadline=None)
@given(env=from_proxy)
def test_proxy_envelopes_round_trip(env) -> None:
    assert decode_from_proxy(encode(env)) == env
    assert decode(encode(env)) == env


@settings(max_examples=50, deadline=None)
@given(env=from_backend)
def test_backend_envelopes_round_trip(env) -> None:
    assert decode_from_backend(encode(env)) == env


def test_frame_form_and_cap() -> None:
    frame = encode_frame(Req(7, b"hello"))
    assert FrameDecoder().feed(frame) == [encode(Req(7, b"hello"))]
    with pytest.raises(FrameTooLarge):
        encode_frame(Req(1, b"x" * 100), max_frame_bytes=50)


def test_wire_shape_is_the_documented_one() -> None:
    wire = msgpack.unpackb(encode(Res(3, b"b", {"game": Delta(4, {"x": 1}, ("y",))})))
    assert wire == {
        "t": "res",
        "seq": 3,
        "body": b"b",
        "deltas": {"game": {"v": 4, "set": {"x": 1}, "del": ["y"]}},
    }
    wire = msgpack.unpackb(encode(Attach("s", 2, {"auth": PartitionState(1, {"u": "a"})}, 5)))
    assert wire == {
        "t": "attach",
        "sid": "s",
        "epoch": 2,
        "state": {"auth": {"v": 1, "data": {"u": "a"}}},
        "next_seq": 5,
    }
    assert msgpack.unpackb(encode(Res(1))) == {"t": "res", "seq": 1}
    assert decode(encode(Res(1))).deltas == EMPTY == {}


def test_attach_client_wire_shape() -> None:
    attach = Attach("s", 2, {}, 5, client=("203.0.113.7", 40000))
    assert msgpack.unpackb(encode(attach))["client"] == ["203.0.113.7", 40000]
    assert decode_from_proxy(encode(attach)) == attach
    assert decode_from_proxy(encode(attach)).client == ("203.0.113.7", 40000)  # a tuple, not a list
    # Absent: None, and the envelope is what every earlier backend reads.
    assert "client" not in msgpack.unpackb(encode(Attach("s", 2, {}, 5)))
    assert decode(raw(t="attach", sid="s", epoch=2, state={}, next_seq=5)).client is None
    six = raw(t="attach", sid="s", epoch=2, state={}, next_seq=5, client=["2001:db8::7", 0])
    assert decode_from_proxy(six).client == ("2001:db8::7", 0)
    longest = raw(t="attach", sid="s", epoch=2, state={}, next_seq=5, client=["f" * 64, 65535])
    assert decode_from_proxy(longest).client == ("f" * 64, 65535)


def test_restore_deltas_and_features_wire_shape() -> None:
    restore = Restore(7, {"auth": PartitionState(1, {"u": "a"})}, {"game": RestoreDelta(3, 5, {"x": 1}, ("y",))})
    wire = msgpack.unpackb(encode(restore))
    assert wire == {
        "t": "restore",
        "epoch": 7,
        "state": {"auth": {"v": 1, "data": {"u": "a"}}},
        "deltas": {"game": {"from": 3, "v": 5, "set": {"x": 1}, "del": ["y"]}},
    }
    assert decode_from_proxy(encode(restore)) == restore
    # Without deltas the envelope is what every version-1 backend reads.
    assert msgpack.unpackb(encode(Restore(7, {}))) == {"t": "restore", "epoch": 7, "state": {}}
    assert msgpack.unpackb(encode(Restore(7, {}, {"g": RestoreDelta(0, 1)})))["deltas"] == {"g": {"from": 0, "v": 1}}
    attached = Attached("s", 2, {}, features=(RESTORE_DELTAS,))
    assert msgpack.unpackb(encode(attached))["features"] == ["restore_deltas"]
    assert "features" not in msgpack.unpackb(encode(Attached("s", 2, {})))
    assert decode(raw(t="attached", sid="s", epoch=2, digests={})).features == ()
    # Unknown features are carried, not refused: the proxy ignores what it does not know.
    unknown = decode(raw(t="attached", sid="s", epoch=2, digests={}, features=["zstd", "restore_deltas"]))
    assert unknown.features == ("zstd", "restore_deltas")


def test_direction_is_checked() -> None:
    with pytest.raises(EnvelopeError, match="not sent by the proxy"):
        decode_from_proxy(encode(Res(1)))
    with pytest.raises(EnvelopeError, match="not sent by a backend"):
        decode_from_backend(encode(Req(1, b"")))


def test_unknown_keys_are_ignored() -> None:
    raw = msgpack.packb({"t": "req", "seq": 1, "body": b"x", "future": {"a": [1]}})
    assert decode_from_proxy(raw) == Req(1, b"x")


def raw(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


GOOD_STATE = {"g": {"v": 1, "data": {"k": 1}}}

MALFORMED = [
    (b"", "not a msgpack envelope"),
    (b"\xc1", "not a msgpack envelope"),
    (raw(t="req", seq=1, body=b"x") + b"\x00", "not a msgpack envelope"),  # trailing bytes
    (b"\x81\xa1t\xa2\xff\xfe", "not a msgpack envelope"),  # invalid UTF-8
    (b"\x81\x91\x01\x02", "not a msgpack envelope"),  # unhashable (array) key
    (b"\x82\xa1t\xa3req\xa4body\xd4\x05\x01", "not a msgpack envelope"),  # ext type
    (msgpack.packb([1, 2]), "expected a map"),
    (raw(seq=1), "unknown envelope type missing"),
    (raw(t="bogus"), "unknown envelope type"),
    (raw(t=1), "unknown envelope type"),
    (raw(t="req", body=b"x"), "req.seq"),
    (raw(t="req", seq=0, body=b"x"), "req.seq"),
    (raw(t="req", seq=True, body=b"x"), "req.seq"),
    (raw(t="req", seq=-1, body=b"x"), "req.seq"),
    (raw(t="req", seq=1.0, body=b"x"), "req.seq"),
    (raw(t="req", seq=1, body="text"), "req.body"),
    (raw(t="req", seq=1), "req.body"),
    (raw(t="attach", epoch=1, state={}, next_seq=1), "attach.sid"),
    (raw(t="attach", sid="", epoch=1, state={}, next_seq=1), "attach.sid"),
    (raw(t="attach", sid="a/b", epoch=1, state={}, next_seq=1), "attach.sid"),
    (raw(t="attach", sid="a\nb", epoch=1, state={}, next_seq=1), "attach.sid"),
    (raw(t="attach", sid="é" * 65, epoch=1, state={}, next_seq=1), "attach.sid"),
    (raw(t="attach", sid=b"s", epoch=1, state={}, next_seq=1), "attach.sid"),
    (raw(t="attach", sid="s", epoch=-1, state={}, next_seq=1), "attach.epoch"),
    (raw(t="attach", sid="s", epoch=1, next_seq=1), "attach.state"),
    (raw(t="attach", sid="s", epoch=1, state=[], next_seq=1), "attach.state"),
    (raw(t="attach", sid="s", epoch=1, state={}, next_seq=0), "attach.next_seq"),
    (raw(t="attach", sid="s", epoch=1, state={}), "attach.next_seq"),
    (raw(t="attach", sid="s", epoch=1, state={}, next_seq=1, requires_ack=1), "attach.requires_ack"),
    (raw(t="attach", sid="s", epoch=1, state={"-x": {"v": 1, "data": {}}}, next_seq=1), "partition names"),
    (raw(t="attach", sid="s", epoch=1, state={"a b": {"v": 1, "data": {}}}, next_seq=1), "partition names"),
    (
        raw(t="attach", sid="s", epoch=1, state={"g" * 65: {"v": 1, "data": {}}}, next_seq=1),
        "partition names",
    ),
    (raw(t="attach", sid="s", epoch=1, state={"g": {"data": {}}}, next_seq=1), "attach.state['g'].v"),
    (raw(t="attach", sid="s", epoch=1, state={"g": {"v": 1}}, next_seq=1), "attach.state['g'].data"),
    (raw(t="attach", sid="s", epoch=1, state={"g": {"v": 1, "data": [1]}}, next_seq=1), "expected a map"),
    (
        raw(t="attach", sid="s", epoch=1, state={"g": {"v": 1, "data": {1.5: 1}}}, next_seq=1),
        "partition keys",
    ),
    (
        raw(t="attach", sid="s", epoch=1, state={"g": {"v": 1, "data": {None: 1}}}, next_seq=1),
        "partition keys",
    ),
    (raw(t="attach", sid="s", epoch=1, state={"g": 3}, next_seq=1), "attach.state['g']"),
    *[
        (raw(t="attach", sid="s", epoch=1, state={}, next_seq=1, client=client), "attach.client")
        for client in (
            None,
            "203.0.113.7:40000",
            ["203.0.113.7"],
            ["203.0.113.7", 40000, 443],
            [b"203.0.113.7", 40000],
            ["", 40000],
            ["f" * 65, 40000],
            [1, 40000],
            ["203.0.113.7", -1],
            ["203.0.113.7", 65536],
            ["203.0.113.7", True],
            ["203.0.113.7", 1.0],
            ["203.0.113.7", "40000"],
            {"ip": "203.0.113.7", "port": 40000},
        )
    ],
    (raw(t="restore", state=GOOD_STATE), "restore.epoch"),
    (raw(t="restore", epoch=1), "restore.state"),
    (raw(t="restore", epoch=1, state={}, deltas=[]), "restore.deltas: expected a map"),
    (raw(t="restore", epoch=1, state={}, deltas={"-g": {"from": 1, "v": 2}}), "partition names"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"v": 2}}), "restore.deltas['g'].from"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": -1, "v": 2}}), "restore.deltas['g'].from"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 1}}), "restore.deltas['g'].v"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 2, "v": 2}}), "above 'from'"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 3, "v": 2}}), "above 'from'"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 1, "v": 2, "data": {}}}), "not data"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 1, "v": 2, "set": [1]}}), "restore.deltas['g'].set"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 1, "v": 2, "del": "k"}}), "restore.deltas['g'].del"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 1, "v": 2, "del": [1.5]}}), "partition keys"),
    (raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 1, "v": 2, "set": {None: 1}}}), "partition keys"),
    (
        raw(t="restore", epoch=1, state={}, deltas={"g": {"from": 1, "v": 2, "set": {"k": 1}, "del": ["k"]}}),
        "same key in both set and del",
    ),
    (
        raw(t="restore", epoch=1, state=GOOD_STATE, deltas={"g": {"from": 1, "v": 2}}),
        "also in restore.state",
    ),
    (raw(t="fence", epoch=-(2**63)), "fence.epoch"),
    (raw(t="release", epoch="1"), "release.epoch"),
    (raw(t="ack"), "ack.seq"),
    (raw(t="res", seq=1, body="s"), "res.body"),
    (raw(t="res", seq=1, deltas=[]), "res.deltas"),
    (raw(t="res", seq=1, deltas={"g": {"set": {}}}), "res.deltas['g'].v"),
    (raw(t="res", seq=1, deltas={"g": {"v": 0}}), "res.deltas['g'].v"),
    (raw(t="res", seq=1, deltas={"g": {"v": 1, "data": {}, "set": {}}}), "either data or set/del"),
    (raw(t="res", seq=1, deltas={"g": {"v": 1, "del": "k"}}), "res.deltas['g'].del"),
    (raw(t="res", seq=1, deltas={"g": {"v": 1, "del": [[1]]}}), "partition keys"),
    (raw(t="res", seq=1, deltas={"g": {"v": 1, "set": {True: 1}}}), "partition keys"),
    (raw(t="push", deltas={}), "push.body"),
    (raw(t="missing", seq=1, partitions=[]), "missing.partitions"),
    (raw(t="missing", seq=1, partitions=["a", "a"]), "twice"),
    (raw(t="missing", seq=1, partitions=[1]), "missing.partitions[0]"),
    (raw(t="missing", seq=1), "missing.partitions"),
    (raw(t="attached", sid="s", epoch=1), "attached.digests"),
    (raw(t="attached", sid="s", epoch=1, digests={"g": -1}), "attached.digests['g']"),
    (raw(t="attached", sid="s", epoch=1, digests={}, requires="auth"), "attached.requires"),
    (raw(t="attached", sid="s", epoch=1, digests={}, features="restore_deltas"), "attached.features"),
    (raw(t="attached", sid="s", epoch=1, digests={}, features=[1]), "attached.features"),
    (raw(t="attached", sid="s", epoch=1, digests={}, features=[b"restore_deltas"]), "attached.features"),
    (raw(t="restored", epoch=1, digests={"g": 1}, versions={"g": "1"}), "restored.versions['g']"),
    (raw(t="fenced", epoch=1, deltas={}), "fenced.last_seq"),
    (raw(t="error", message="m"), "error.code"),
    (raw(t="error", code="x", message=1), "error.message"),
    (raw(t="error", code="x", seq="1"), "error.seq"),
]


@pytest.mark.parametrize("payload,match", MALFORMED)
def test_malformed_envelopes_are_refused_clearly(payload, match) -> None:
    with pytest.raises(
        EnvelopeError, match=match.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
    ):
        decode(payload)


def test_error_code_is_bad_envelope() -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(b"\xc1")
    assert info.value.code == "bad_envelope"


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=200))
def test_random_bytes_raise_only_envelope_error(payload) -> None:
    try:
        decode(payload)
    except EnvelopeError:
        pass


field_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4) | st.integers(min_value=-5, max_value=5), scalars, max_size=3),
    states.map(lambda s: {k: {"v": v.version, "data": v.data} for k, v in s.items()}),
)
TYPES = [
    "attach",
    "req",
    "restore",
    "fence",
    "release",
    "ack",
    "attached",
    "res",
    "push",
    "missing",
    "restored",
    "fenced",
    "error",
]
FIELDS = [
    "sid",
    "epoch",
    "state",
    "next_seq",
    "requires_ack",
    "token",
    "client",
    "seq",
    "body",
    "digests",
    "versions",
    "requires",
    "deltas",
    "features",
    "partitions",
    "last_seq",
    "code",
    "message",
]


@settings(max_examples=150, deadline=None)
@given(t=st.sampled_from(TYPES), fields=st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=6))
def test_random_fields_raise_only_envelope_error(t, fields) -> None:
    try:
        decode(msgpack.packb({"t": t, **fields}, use_bin_type=True))
    except EnvelopeError:
        pass


def test_unencodable_value_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="cannot encode res"):
        encode(Res(1, b"", {"g": Delta(1, {"k": {1, 2}})}))
    with pytest.raises(EnvelopeError):
        encode(Fence(2**64))
