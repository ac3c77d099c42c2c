"""PROXY protocol v1 and v2, parse and build (sans-IO).

Implements the HAProxy PROXY protocol specification ("The PROXY protocol", versions 1 and 2,
haproxy.org/download/2.9/doc/proxy-protocol.txt):

- v1 (section 2.1): one ASCII line ``PROXY TCP4|TCP6|UNKNOWN src dst sport dport\\r\\n`` of at most
  107 bytes.
- v2 (section 2.2): a 12-byte signature, a version/command byte, a family/protocol byte, a 16-bit
  big-endian length, then the addresses and optional TLVs (which we skip).

A listener that accepts the protocol expects it on *every* connection (section 1: "the receiver MUST
NOT guess"): anything else is an error and the connection is closed.  Parsing is O(bytes) and capped
at ``MAX_V2_BYTES`` so a hostile client costs bounded work.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_BYTES = 107
# The spec allows up to 16 + 65535 bytes; real headers with TLVs are far smaller.  HAProxy itself
# refuses headers larger than its buffer.  We cap lower to bound per-connection memory.
MAX_V2_BYTES = 16 + 4096

_V2_HEADER = struct.Struct("!12sBBH")
_V4_ADDRS = struct.Struct("!4s4sHH")
_V6_ADDRS = struct.Struct("!16s16sHH")


class ProxyProtocolError(ValueError):
    """The client sent something that is not a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a PROXY header says about the original connection.

    ``source_ip`` is ``None`` for ``UNKNOWN`` (v1) and ``LOCAL``/``UNSPEC`` (v2) headers: the receiver
    then uses the real peer address (spec sections 2.1 and 2.2).
    """

    version: int
    source_ip: str | None
    source_port: int | None
    dest_ip: str | None
    dest_port: int | None


def parse(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    """Parse a PROXY header at the start of ``buf``.

    Returns ``(header, bytes_consumed)``, or ``None`` when more bytes are needed.  Raises
    :class:`ProxyProtocolError` when the bytes cannot be a valid header.
    """
    if not buf:
        return None
    if buf[0] == 0x0D:  # '\r': only v2 starts with it
        return _parse_v2(buf)
    if buf[0] == 0x50:  # 'P'
        return _parse_v1(buf)
    raise ProxyProtocolError("missing PROXY protocol header")


def _parse_v1(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    prefix = b"PROXY "
    n = min(len(buf), len(prefix))
    if bytes(buf[:n]) != prefix[:n]:
        raise ProxyProtocolError("missing PROXY protocol header")
    end = bytes(buf[:V1_MAX_BYTES]).find(b"\r\n")
    if end < 0:
        if len(buf) >= V1_MAX_BYTES:
            raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
        return None
    try:
        line = bytes(buf[:end]).decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 header is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None, None, None), end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("malformed PROXY v1 header")
    family = 4 if parts[1] == "TCP4" else 6
    src, dst = _ip(parts[2], family), _ip(parts[3], family)
    sport, dport = _port(parts[4]), _port(parts[5])
    return ProxyHeader(1, src, sport, dst, dport), end + 2


def _ip(text: str, family: int) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"bad address in PROXY header: {text[:64]!r}") from None
    if addr.version != family:
        raise ProxyProtocolError("address family does not match PROXY header protocol")
    return str(addr)


def _port(text: str) -> int:
    # Spec 2.1: ports are decimal without leading zeros, 0..65535.
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyProtocolError(f"bad port in PROXY header: {text[:16]!r}")
    return int(text)


def _parse_v2(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    n = min(len(buf), 12)
    if bytes(buf[:n]) != V2_SIGNATURE[:n]:
        raise ProxyProtocolError("missing PROXY protocol header")
    if len(buf) < 16:
        return None
    _, ver_cmd, fam, length = _V2_HEADER.unpack_from(buf)
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError("unsupported PROXY protocol version")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyProtocolError("unknown PROXY v2 command")
    total = 16 + length
    if total > MAX_V2_BYTES:
        raise ProxyProtocolError(f"PROXY v2 header of {total} bytes exceeds {MAX_V2_BYTES}")
    if len(buf) < total:
        return None
    if command == 0:  # LOCAL: health checks from the upstream proxy itself; keep the real peer.
        return ProxyHeader(2, None, None, None, None), total
    family, transport = fam >> 4, fam & 0x0F
    if family == 0 or transport not in (1, 2):  # UNSPEC, or not STREAM/DGRAM
        return ProxyHeader(2, None, None, None, None), total
    if family == 1:
        if length < _V4_ADDRS.size:
            raise ProxyProtocolError("PROXY v2 header too short for IPv4 addresses")
        s, d, sp, dp = _V4_ADDRS.unpack_from(buf, 16)
        return ProxyHeader(2, str(ipaddress.IPv4Address(s)), sp, str(ipaddress.IPv4Address(d)), dp), total
    if family == 2:
        if length < _V6_ADDRS.size:
            raise ProxyProtocolError("PROXY v2 header too short for IPv6 addresses")
        s, d, sp, dp = _V6_ADDRS.unpack_from(buf, 16)
        return ProxyHeader(2, str(ipaddress.IPv6Address(s)), sp, str(ipaddress.IPv6Address(d)), dp), total
    # AF_UNIX and future families: no IP to take.
    return ProxyHeader(2, None, None, None, None), total


def build_v1(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """Build a v1 header for a TCP connection from ``source`` to ``dest``."""
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(dest[0])
    if src.version != dst.version:
        # Mixed families (an IPv4 client reaching an IPv6 listener): spec 2.1 says use UNKNOWN.
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {source[1]} {dest[1]}\r\n".encode("ascii")


def build_v2(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """Build a v2 ``PROXY`` command header for a TCP connection from ``source`` to ``dest``."""
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(dest[0])
    if src.version != dst.version:
        return _V2_HEADER.pack(V2_SIGNATURE, 0x21, 0x00, 0)
    if src.version == 4:
        body = _V4_ADDRS.pack(src.packed, dst.packed, source[1], dest[1])
        return _V2_HEADER.pack(V2_SIGNATURE, 0x21, 0x11, len(body)) + body
    body = _V6_ADDRS.pack(src.packed, dst.packed, source[1], dest[1])
    return _V2_HEADER.pack(V2_SIGNATURE, 0x21, 0x21, len(body)) + body


class HeaderStage:
    """Stands in for a connection's frame decoder (``feed``/``eof``) while its PROXY header is
    incomplete, so that frames cannot start before the header and the per-frame path has no check
    for it.

    The bytes collect until :func:`parse` has the whole header (it may take several reads); then
    ``on_header(header, consumed, decoder)`` is called, where the owner puts ``decoder`` back in this
    stage's place, and the bytes that followed the header go to ``decoder``.  A header that cannot be valid
    calls ``on_error(reason)`` once (the parser refuses as soon as the bytes differ, and caps a
    header's size); after that every ``feed`` yields nothing.
    """

    __slots__ = ("buf", "decoder", "failed", "on_error", "on_header")

    def __init__(
        self,
        decoder: Any,
        on_header: Callable[[ProxyHeader, int, Any], None],
        on_error: Callable[[str], None],
    ) -> None:
        self.decoder = decoder
        self.on_header = on_header
        self.on_error = on_error
        self.buf = bytearray()
        self.failed = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.failed:
            return []
        buf = self.buf
        buf += data
        try:
            parsed = parse(buf)
        except ProxyProtocolError as exc:
            self.failed = True
            self.on_error(str(exc))
            return []
        if parsed is None:
            return []
        header, consumed = parsed
        self.on_header(header, consumed, self.decoder)
        return self.decoder.feed(bytes(buf[consumed:]))

    def eof(self) -> None:
        pass  # no frame was cut short: the owner ends the connection as a plain close

