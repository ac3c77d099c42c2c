from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core import proxy_protocol as pp


def test_v1_tcp4() -> None:
    header, used = pp.parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\nGET /")
    assert header == pp.ProxyHeader(1, "192.0.2.1", 56324, "198.51.100.7", 443)
    assert used == len(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n")


def test_v1_tcp6_and_unknown() -> None:
    header, _ = pp.parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
    assert header.source_ip == "2001:db8::1" and header.dest_port == 2
    header, used = pp.parse(b"PROXY UNKNOWN ffff::1 ffff::2 3 4\r\nrest")
    assert header.source_ip is None and used == len(b"PROXY UNKNOWN ffff::1 ffff::2 3 4\r\n")


def test_incomplete_needs_more() -> None:
    assert pp.parse(b"") is None
    assert pp.parse(b"PRO") is None
    assert pp.parse(b"PROXY TCP4 1.2.3.4") is None
    assert pp.parse(pp.V2_SIGNATURE[:7]) is None
    full = pp.build_v2(("10.0.0.1", 1000), ("10.0.0.2", 80))
    assert pp.parse(full[:-1]) is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",  # not a header at all: never guessed
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # leading zero
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",  # family mismatch
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"A" * 120,  # no CRLF within 107 bytes
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),  # version 3
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + bytes(4),  # too short for IPv4
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # larger than the cap
        b"\r\nX",
    ],
)
def test_invalid_headers_are_rejected(data: bytes) -> None:
    with pytest.raises(pp.ProxyProtocolError):
        pp.parse(data)


def test_v2_local_and_unspec_keep_real_peer() -> None:
    local = pp.V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    header, used = pp.parse(local + b"x")
    assert header.source_ip is None and used == 16


def test_v2_skips_tlvs() -> None:
    body = struct.pack("!4s4sHH", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1234, 80) + b"\x04\x00\x02ab"
    data = pp.V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body + b"payload"
    header, used = pp.parse(data)
    assert (header.source_ip, header.source_port) == ("10.0.0.1", 1234)
    assert data[used:] == b"payload"


addresses = st.one_of(
    st.ip_addresses(v=4).map(str).map(lambda a: (a, 4)),
    st.ip_addresses(v=6).map(str).map(lambda a: (a, 6)),
)
ports = st.integers(0, 65535)


@given(addresses, addresses, ports, ports, st.sampled_from([1, 2]), st.binary(max_size=64))
def test_build_then_parse_round_trips(src, dst, sport, dport, version, tail) -> None:
    build = pp.build_v1 if version == 1 else pp.build_v2
    data = build((src[0], sport), (dst[0], dport))
    header, used = pp.parse(data + tail)
    assert used == len(data)
    if src[1] != dst[1]:
        assert header.source_ip is None  # mixed families are sent as UNKNOWN/UNSPEC
    else:
        assert ipaddress.ip_address(header.source_ip) == ipaddress.ip_address(src[0])
        assert (header.source_port, header.dest_port) == (sport, dport)


@given(st.binary(max_size=300))
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        result = pp.parse(data)
    except pp.ProxyProtocolError:
        return
    if result is not None:
        assert 0 < result[1] <= len(data)
