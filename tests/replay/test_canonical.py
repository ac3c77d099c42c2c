"""Canonical msgpack and the partition digest (docs/protocol.md, "Partition data, deltas and digests")."""

from __future__ import annotations

import enum
import random

import msgpack
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.canonical import canonical_packb, digest

# --- known answers: the bytes another implementation must produce ----------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (2**32, "cf0000000100000000"),
        (2**64 - 1, "cfffffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-129, "d1ff7f"),
        (-(2**31) - 1, "d3ffffffff7fffffff"),
        (-(2**63), "d38000000000000000"),
        (1.5, "cb3ff8000000000000"),
        (-0.0, "cb8000000000000000"),
        ("a", "a161"),
        (b"a", "c40161"),
        (bytearray(b"a"), "c40161"),
        (None, "c0"),
        (True, "c3"),
        (False, "c2"),
        ((1, 2), "920102"),
        ([1, [2]], "92019102"),
    ],
)
def test_scalar_and_array_encodings(value: object, expected: str) -> None:
    assert canonical_packb(value).hex() == expected


def test_map_keys_sort_by_their_encoding_bytewise() -> None:
    # "b" encodes a1 62, "aa" encodes a2 61 61: the length header sorts first, so "b" < "aa".
    assert canonical_packb({"aa": 1, "b": 2}).hex() == "82" + "a16202" + "a2616101"
    # positive fixint (0x01) < fixstr (0xa1..) < bin (0xc4) < negative fixint (0xff)
    assert (
        canonical_packb({-1: 0, b"k": 0, "k": 0, 1: 0}).hex()
        == "84" + "0100" + "a16b00" + "c4016b00" + "ff00"
    )


def test_nested_maps_are_sorted_at_every_level() -> None:
    got = canonical_packb({"z": [{"y": 1, "x": 2}], "a": {"d": {"c": 1, "b": 2}}})
    want = msgpack.packb({"a": {"d": {"b": 2, "c": 1}}, "z": [{"x": 2, "y": 1}]})
    assert got == want


def test_scalar_subclasses_encode_as_their_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 3

    class Kind(enum.StrEnum):
        GAME = "game"

    assert canonical_packb({Kind.GAME: Color.RED}) == canonical_packb({"game": 3})


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        object(),
        msgpack.ExtType(1, b"x"),
        msgpack.Timestamp(1, 0),
        2**64,
        -(2**63) - 1,
        {"k": [1, {2}]},
        {frozenset(): 1},
        complex(1, 2),
    ],
)
def test_unsupported_values_raise_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        canonical_packb(value)


def test_excessive_nesting_is_refused() -> None:
    value: object = 1
    for _ in range(200):
        value = [value]
    with pytest.raises(TypeError, match="nesting"):
        canonical_packb(value)


def test_digest_is_xxh3_64_seed_0_of_the_canonical_bytes() -> None:
    assert digest({}) == xxhash.xxh3_64_intdigest(b"\x80")
    assert digest({"b": 1, "aa": 2}) == xxhash.xxh3_64_intdigest(bytes.fromhex("82a16201a2616102"))
    assert 0 <= digest({"k": [1.5, None]}) < 2**64
    with pytest.raises(TypeError):
        digest([1, 2])  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
keys = st.text(max_size=6) | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.binary(max_size=4)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
maps = st.dictionaries(keys, values, max_size=8)


def _shuffled(obj: object, rng: random.Random) -> object:
    """The same value with every map rebuilt in a random insertion order."""
    if isinstance(obj, dict):
        items = list(obj.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(obj, list):
        return [_shuffled(v, rng) for v in obj]
    return obj


@settings(max_examples=60, deadline=None)
@given(maps, st.randoms(use_true_random=False))
def test_equal_maps_in_any_insertion_order_give_equal_bytes_and_digests(
    data: dict[object, object], rng: random.Random
) -> None:
    other = _shuffled(data, rng)
    assert other == data
    assert canonical_packb(other) == canonical_packb(data)
    assert digest(other) == digest(data)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(maps)
def test_round_trip_through_msgpack_equals_the_input(data: dict[object, object]) -> None:
    decoded = msgpack.unpackb(canonical_packb(data), strict_map_key=False)
    assert decoded == data
    # and re-encoding the decoded value is a fixed point
    assert canonical_packb(decoded) == canonical_packb(data)


class _Pairs(list):  # type: ignore[type-arg]
    """A decoded map, as its list of (key, value) pairs in wire order."""


def _assert_sorted(obj: object) -> None:
    if isinstance(obj, _Pairs):
        encoded = [msgpack.packb(k) for k, _ in obj]
        assert encoded == sorted(encoded)
        assert len(set(encoded)) == len(encoded)
        for _, v in obj:
            _assert_sorted(v)
    elif isinstance(obj, list):
        for v in obj:
            _assert_sorted(v)


@settings(max_examples=40, deadline=None)
@given(maps)
def test_every_map_in_the_output_is_in_bytewise_key_order(data: dict[object, object]) -> None:
    pairs = msgpack.unpackb(canonical_packb(data), object_pairs_hook=_Pairs, strict_map_key=False)
    _assert_sorted(pairs)
