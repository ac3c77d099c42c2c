"""The length-prefixed frame codec (sans-IO): splits, concatenations, caps and garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.frames import FrameDecoder, FrameEncoder, FrameError, FrameTooLarge, encode_frame

FORMATS = [(h, o) for h in (1, 2, 4, 8) for o in ("big", "little")]

payloads = st.lists(st.binary(max_size=300), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    frames=payloads,
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_split_anywhere_gives_the_same_frames(fmt, frames, cuts, kind) -> None:
    header_bytes, order = fmt
    limit = min(300, (1 << (8 * header_bytes)) - 1)
    frames = [f[:limit] for f in frames]
    enc = FrameEncoder(header_bytes=header_bytes, byteorder=order, max_frame_bytes=300)
    stream = b"".join(enc.encode(f) for f in frames)
    cuts = [c for c in cuts if c <= len(stream)]
    decoder = FrameDecoder(header_bytes=header_bytes, byteorder=order, max_frame_bytes=300)
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        out += decoder.feed(kind(stream[start:cut]))
        assert decoder.buffered_bytes < header_bytes + 300
        start = cut
    assert out == frames
    assert decoder.at_boundary
    decoder.eof()  # at a boundary: no error


@settings(max_examples=40, deadline=None)
@given(frames=payloads)
def test_one_byte_at_a_time(frames) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == frames


def test_header_layouts_on_the_wire() -> None:
    assert encode_frame(b"ab") == b"\x00\x00\x00\x02ab"
    assert encode_frame(b"ab", header_bytes=2, byteorder="little") == b"\x02\x00ab"
    assert encode_frame(b"", header_bytes=1) == b"\x00"
    assert encode_frame(b"x", header_bytes=8) == struct.pack(">Q", 1) + b"x"
    assert FrameEncoder(header_bytes=4, byteorder="little").header(258) == b"\x02\x01\x00\x00"


@pytest.mark.parametrize("header_bytes,order", FORMATS)
def test_oversized_rejected_from_the_header_alone(header_bytes, order) -> None:
    cap = min(100, (1 << (8 * header_bytes)) - 2)
    decoder = FrameDecoder(header_bytes=header_bytes, byteorder=order, max_frame_bytes=cap)
    header = (cap + 1).to_bytes(header_bytes, order)
    # All but the last header byte: nothing is known yet.
    assert decoder.feed(header[:-1]) == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header[-1:])  # no body at all was sent
    assert info.value.length == cap + 1 and info.value.max_frame_bytes == cap
    assert decoder.buffered_bytes == 0
    with pytest.raises(FrameError):
        decoder.feed(b"\x00" * header_bytes)  # the stream is out of sync for good


def test_huge_claim_costs_nothing() -> None:
    decoder = FrameDecoder(max_frame_bytes=1 << 20)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\xff\xff\xff\xff" + b"x" * 10)
    assert decoder.buffered_bytes == 0


def test_frame_at_the_cap_passes() -> None:
    decoder = FrameDecoder(max_frame_bytes=5)
    assert decoder.feed(encode_frame(b"12345")) == [b"12345"]
    with pytest.raises(FrameTooLarge):
        encode_frame(b"123456", max_frame_bytes=5)


def test_header_size_bounds_the_cap() -> None:
    assert FrameDecoder(header_bytes=1, max_frame_bytes=1 << 20).max_frame_bytes == 255
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 256, header_bytes=1)
    assert encode_frame(b"x" * 255, header_bytes=1)[:1] == b"\xff"


def test_frames_before_and_after_a_partial_one() -> None:
    decoder = FrameDecoder()
    stream = encode_frame(b"one") + encode_frame(b"two") + encode_frame(b"three")
    assert decoder.feed(stream[:12]) == [b"one"]
    assert not decoder.at_boundary
    assert decoder.feed(stream[12:]) == [b"two", b"three"]
    assert decoder.feed(b"") == []


def test_eof_inside_a_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"hello")[:6])
    with pytest.raises(FrameError, match="inside a frame"):
        decoder.eof()


@pytest.mark.parametrize(
    "kwargs",
    [{"header_bytes": 3}, {"byteorder": "middle"}, {"max_frame_bytes": -1}, {"max_frame_bytes": 1.5}],
)
def test_bad_configuration(kwargs) -> None:
    with pytest.raises(ValueError):
        FrameDecoder(**kwargs)
    with pytest.raises(ValueError):
        FrameEncoder(**kwargs)


@settings(max_examples=80, deadline=None)
@given(
    garbage=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=400), fmt=st.sampled_from(FORMATS)
)
def test_garbage_gives_frames_or_too_large_and_accounts_for_every_byte(garbage, cut, fmt) -> None:
    header_bytes, order = fmt
    decoder = FrameDecoder(header_bytes=header_bytes, byteorder=order, max_frame_bytes=64)
    consumed = 0
    try:
        for piece in (garbage[:cut], garbage[cut:]):
            for frame in decoder.feed(piece):
                assert len(frame) <= 64
                consumed += header_bytes + len(frame)
    except FrameTooLarge:
        return
    assert consumed + decoder.buffered_bytes == len(garbage)
