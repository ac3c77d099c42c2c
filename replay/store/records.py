"""On-disk framing shared by log segments and snapshots (sans-IO: bytes in, bytes out).

Byte layout (docs/store.md, "File format"); all integers big-endian:

File header, 32 bytes::

    0   8  magic        b"FRYMNLOG" (segment) or b"FRYMNSNP" (snapshot)
    8   4  format       1
    12  4  flags        0 (reserved)
    16  8  seq          segment: commit sequence number of its first record
                        snapshot: commit sequence number it contains everything up to
    24  8  checksum     xxh3_64 (seed 0) of bytes 0..24

Record, 12 bytes + payload::

    0   4  length       payload length in bytes, 1 .. MAX_RECORD_BYTES
    4   8  checksum     xxh3_64 of the payload with seed = length
    12  n  payload      one msgpack value

Seeding the payload checksum with the length makes a damaged length field fail the checksum instead of
silently reframing the rest of the file.  A zero-filled tail (what some file systems leave after a crash
that extended a file) fails too: the checksum of an empty payload with seed 0 is not 0.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import xxhash

__all__ = [
    "FILE_HEADER_BYTES",
    "FORMAT_VERSION",
    "MAX_RECORD_BYTES",
    "RECORD_HEADER_BYTES",
    "SEGMENT_MAGIC",
    "SNAPSHOT_MAGIC",
    "BadHeader",
    "decode_file_header",
    "encode_file_header",
    "encode_record",
    "iter_records",
]

SEGMENT_MAGIC = b"FRYMNLOG"
SNAPSHOT_MAGIC = b"FRYMNSNP"
FORMAT_VERSION = 1
MAX_RECORD_BYTES = (1 << 31) - 1

_FILE_HEADER = struct.Struct(">8sIIQ")
_CHECKSUM = struct.Struct(">Q")
_RECORD_HEADER = struct.Struct(">IQ")
FILE_HEADER_BYTES = _FILE_HEADER.size + _CHECKSUM.size
RECORD_HEADER_BYTES = _RECORD_HEADER.size


class BadHeader(ValueError):
    """A file header that is short, damaged, of the wrong kind or of an unknown format."""


def encode_file_header(magic: bytes, seq: int) -> bytes:
    head = _FILE_HEADER.pack(magic, FORMAT_VERSION, 0, seq)
    return head + _CHECKSUM.pack(xxhash.xxh3_64_intdigest(head))


def decode_file_header(buf: bytes | memoryview, magic: bytes) -> int:
    """Return the header's ``seq``; raise ``BadHeader`` with the reason otherwise."""
    if len(buf) < FILE_HEADER_BYTES:
        raise BadHeader(f"file header is {len(buf)} bytes, needs {FILE_HEADER_BYTES}")
    head = bytes(buf[: _FILE_HEADER.size])
    (checksum,) = _CHECKSUM.unpack_from(buf, _FILE_HEADER.size)
    if xxhash.xxh3_64_intdigest(head) != checksum:
        raise BadHeader("file header checksum mismatch")
    got_magic, fmt, _flags, seq = _FILE_HEADER.unpack(head)
    if got_magic != magic:
        raise BadHeader(f"magic {got_magic!r}, expected {magic!r}")
    if fmt != FORMAT_VERSION:
        raise BadHeader(f"format {fmt} is not supported (this build reads format {FORMAT_VERSION})")
    return int(seq)


def encode_record(payload: bytes) -> bytes:
    n = len(payload)
    if not 0 < n <= MAX_RECORD_BYTES:
        raise ValueError(f"record payload of {n} bytes is outside 1..{MAX_RECORD_BYTES}")
    return _RECORD_HEADER.pack(n, xxhash.xxh3_64_intdigest(payload, seed=n)) + payload


def iter_records(buf: bytes | memoryview, start: int) -> Iterator[tuple[int, memoryview | None, str | None]]:
    """Yield ``(offset, payload, None)`` for each intact record from ``start``.

    At the first damaged record, yield ``(offset, None, reason)`` and stop; ``offset`` is where the
    damage starts (the length to truncate to).  A clean end of ``buf`` yields nothing more.
    """
    view = memoryview(buf)
    end = len(view)
    offset = start
    while offset < end:
        if end - offset < RECORD_HEADER_BYTES:
            yield offset, None, f"torn record header ({end - offset} of {RECORD_HEADER_BYTES} bytes)"
            return
        length, checksum = _RECORD_HEADER.unpack_from(view, offset)
        body = offset + RECORD_HEADER_BYTES
        if length == 0 or length > MAX_RECORD_BYTES:
            yield offset, None, f"invalid record length {length}"
            return
        if body + length > end:
            yield offset, None, f"torn record ({end - body} of {length} payload bytes)"
            return
        payload = view[body : body + length]
        if xxhash.xxh3_64_intdigest(payload, seed=length) != checksum:
            yield offset, None, "record checksum mismatch"
            return
        yield offset, payload, None
        offset = body + length
