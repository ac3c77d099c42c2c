"""The compiled steady-state path of frames listeners (replay/_speedups.c) against the Python path.

Each function handles a prefix of a read and leaves the rest to the Python decoder, so the properties
are: on the prefix it does exactly what the Python code does (byte for byte), and it never takes a
frame the Python path would treat differently.
"""

from __future__ import annotations

import os
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.frames import FrameDecoder, FrameTooLarge

try:
    from replay import _speedups
except ImportError:  # built without a compiler
    _speedups = None  # type: ignore[assignment]

needs_build = pytest.mark.skipif(_speedups is None, reason="replay._speedups is not built")
pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def test_the_extension_is_built() -> None:
    """Installs with a C compiler build it (pyproject.toml); without one the proxy runs the Python
    path, and FERRYMAN_NO_SPEEDUPS=1 says that is expected."""
    if os.environ.get("FERRYMAN_NO_SPEEDUPS") == "1":
        pytest.skip("built without the extension on purpose")
    assert _speedups is not None, "replay._speedups is missing: reinstall with a C compiler (pip install -e .)"


def _header(length: int, hsize: int, big: bool) -> bytes:
    return length.to_bytes(hsize, "big" if big else "little")


def _req_frame(seq: int, body: bytes) -> bytes:
    payload = pack({"t": "req", "seq": seq, "body": body})
    return len(payload).to_bytes(4, "big") + payload


def _reference_wrap(data: bytes, hsize: int, big: bool, max_frame: int, seq: int) -> tuple[bytes, list[bytes], int]:
    """What the Python path forwards: complete frames within the limit, stopping where the decoder
    would buffer or raise."""
    decoder = FrameDecoder(header_bytes=hsize, byteorder="big" if big else "little", max_frame_bytes=max_frame)
    bodies: list[bytes] = []
    end = 0
    while True:
        if len(data) - end < hsize:
            break
        length = int.from_bytes(data[end : end + hsize], "big" if big else "little")
        if length > decoder.max_frame_bytes or end + hsize + length > len(data):
            break
        bodies.append(data[end + hsize : end + hsize + length])
        end += hsize + length
    assert decoder.feed(data[:end]) == bodies and decoder.at_boundary
    return b"".join(_req_frame(seq + i, b) for i, b in enumerate(bodies)), bodies, end


bodies_st = st.lists(st.binary(max_size=300) | st.sampled_from([b"", b"x" * 256, b"y" * 70000]), max_size=6)


@needs_build
@settings(max_examples=300, deadline=None)
@given(
    bodies=bodies_st,
    hsize=st.sampled_from([1, 2, 4, 8]),
    big=st.booleans(),
    seq=st.sampled_from([1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63]),
    cut=st.integers(min_value=0, max_value=20),
    max_frame=st.sampled_from([0, 100, 300, 1 << 20]),
)
def test_wrap_reqs_is_the_python_path_on_the_prefix_it_takes(
    bodies: list[bytes], hsize: int, big: bool, seq: int, cut: int, max_frame: int
) -> None:
    cap = (1 << (8 * hsize)) - 1
    bodies = [b for b in bodies if len(b) <= cap]
    data = b"".join(_header(len(b), hsize, big) + b for b in bodies)
    data = data[: max(0, len(data) - cut)]  # often ends inside a frame
    expected_out, expected_bodies, expected_end = _reference_wrap(data, hsize, big, max_frame, seq)
    inflight = {0: b"earlier"}
    out, next_seq, end = _speedups.wrap_reqs(hsize, big, max_frame, inflight, data, seq)
    assert end == expected_end
    assert next_seq == seq + len(expected_bodies)
    assert (out or b"") == expected_out
    assert inflight == {0: b"earlier", **{seq + i: b for i, b in enumerate(expected_bodies)}}
    # What is left is for the decoder, which raises on an oversized header.
    rest = FrameDecoder(header_bytes=hsize, byteorder="big" if big else "little", max_frame_bytes=max_frame)
    try:
        assert rest.feed(data[end:]) == []
    except FrameTooLarge:
        pass


@needs_build
def test_wrap_reqs_without_a_complete_frame_returns_nothing() -> None:
    inflight: dict[int, bytes] = {}
    assert _speedups.wrap_reqs(4, True, 100, inflight, b"\x00\x00\x00\x05abc", 7) == (None, 7, 0)
    assert _speedups.wrap_reqs(4, True, 2, inflight, b"\x00\x00\x00\x05abcde", 7) == (None, 7, 0)  # too large
    assert inflight == {}


@needs_build
def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError):
        _speedups.wrap_reqs(4, True, 100, {}, bytearray(b"x"), 1)
    with pytest.raises(ValueError):
        _speedups.wrap_reqs(3, True, 100, {}, b"", 1)
    with pytest.raises(TypeError):
        _speedups.unwrap_res([], 4, True, b"")
    with pytest.raises(ValueError):
        _speedups.unwrap_res({}, 2, True, b"")
    with pytest.raises(TypeError):
        _speedups.wrap_reqs(4, True)


# -- replies -------------------------------------------------------------------------------------


def _envelope(m: object) -> bytes:
    payload = m if isinstance(m, bytes) else pack(m)
    return len(payload).to_bytes(4, "big") + payload


def _is_fast(payload: bytes, inflight: dict[int, bytes]) -> int | None:
    """The Python path's test for a reply it sends straight on: exactly t/seq/body, seq outstanding."""
    try:
        m = msgpack.unpackb(payload)
    except Exception:
        return None
    if type(m) is not dict or m.get("t") != "res" or len(m) != 3 or "body" not in m:
        return None
    seq, body = m.get("seq"), m.get("body")
    if type(seq) is not int or not 0 < seq < 2**64 or type(body) is not bytes or seq not in inflight:
        return None
    return seq


envelopes_st = st.lists(
    st.one_of(
        st.builds(lambda s, b: {"t": "res", "seq": s, "body": b}, st.integers(1, 12), st.binary(max_size=80)),
        st.builds(lambda s, b: {"body": b, "seq": s, "t": "res"}, st.integers(1, 12), st.binary(max_size=80)),
        st.builds(lambda s: {"t": "res", "seq": s}, st.integers(1, 12)),  # no body: the Python path
        st.builds(lambda s, b: {"t": "res", "seq": s, "body": b, "deltas": {}}, st.integers(1, 12), st.binary(max_size=8)),
        st.builds(lambda s: {"t": "res", "seq": s, "body": "text"}, st.integers(1, 12)),  # str body: an error
        st.builds(lambda b: {"t": "push", "body": b}, st.binary(max_size=8)),
        st.just({"t": "res", "seq": 0, "body": b""}),
        st.just({"t": "res", "seq": -1, "body": b""}),
        st.just({"t": "res", "seq": 2**64 - 1, "body": b"z"}),
        st.just(b"\x83\xa1t\xa3res\xa3seq\x01\xa4body\xc4\x01x\xc0"),  # trailing byte
        st.just(b"\x83\xa1t\xa3res\xa1t\xa3res\xa3seq\x01"),  # duplicate key
        st.just(b"\x83\xa1t\xd9\x03res\xa3seq\x01\xa4body\xc4\x00"),  # str8 value: valid, not the fast shape
        st.just(b"\x83\xa1t\xa3res\xa3seq\xd0\x01\xa4body\xc4\x00"),  # int8 seq
        st.just(b"\x83\xa1t\xa3res\xa3seq\x01\xa4body\xc4\x05ab"),  # truncated body
    ),
    max_size=8,
)


@needs_build
@settings(max_examples=400, deadline=None)
@given(envelopes=envelopes_st, outstanding=st.sets(st.integers(1, 12)), hsize=st.sampled_from([4, 8]), big=st.booleans(), cut=st.integers(0, 6))
def test_unwrap_res_takes_the_leading_fast_replies(
    envelopes: list[object], outstanding: set[int], hsize: int, big: bool, cut: int
) -> None:
    data = b"".join(_envelope(m) for m in envelopes)
    data = data[: max(0, len(data) - cut)]
    reference = {s: b"frame" for s in outstanding | {2**64 - 1}}
    # The Python path's leading run of replies it sends straight on: (end of envelope, client frame).
    run: list[tuple[int, int, bytes]] = []
    remaining = dict(reference)
    pos = 0
    while len(data) - pos >= 4:
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + length > len(data):
            break
        payload = data[pos + 4 : pos + 4 + length]
        seq = _is_fast(payload, remaining)
        if seq is None:
            break
        del remaining[seq]
        body = msgpack.unpackb(payload)["body"]
        pos += 4 + length
        run.append((pos, seq, len(body).to_bytes(hsize, "big" if big else "little") + body))
    inflight = dict(reference)
    out, count, body_bytes, end = _speedups.unwrap_res(inflight, hsize, big, data)
    # It takes a prefix of that run (all of it when every envelope is msgpack's own encoding; it may
    # stop earlier at valid but unusual encodings, which the Python path then handles) ...
    assert count <= len(run)
    if all(isinstance(m, dict) for m in envelopes):
        assert count == len(run)
    taken = run[:count]
    assert end == (taken[-1][0] if taken else 0)
    # ... and does with it exactly what the Python path does.
    assert (out or b"") == b"".join(frame for _, _, frame in taken)
    assert (out is None) == (count == 0)
    assert body_bytes == sum(len(frame) - hsize for _, _, frame in taken)
    assert inflight == {k: v for k, v in reference.items() if k not in {seq for _, seq, _ in taken}}
