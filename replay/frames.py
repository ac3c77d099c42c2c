"""Length-prefixed frames (sans-IO): an incremental decoder and an encoder.

Wire format (docs/protocol.md, "Framing"; DESIGN.md section 4, ``frames`` mode): every frame is an
unsigned integer length of ``header_bytes`` bytes (1, 2, 4 or 8; 4 by default) in ``byteorder``
("big" by default), followed by exactly that many payload bytes.  A zero length is a valid, empty
frame at this layer; what a payload may contain is the next layer's business.

Rules
-----
- **Bounded work for remote garbage** (STYLE.md, "Errors").  The length is checked against
  ``max_frame_bytes`` as soon as the header is complete, before any of the body is buffered, so an
  oversized frame costs ``header_bytes`` of memory, not the length it claims.  The decoder never holds
  more than one partial frame (at most ``header_bytes + max_frame_bytes - 1`` bytes) between calls.
- **O(bytes)**.  Each input byte is copied at most twice (once into the partial-frame buffer if the
  frame straddles reads, once into the returned payload); complete frames inside one read are sliced
  straight out of it.  ``bytearray`` deletion from the front is amortised O(1) in CPython.
- **Errors are final**.  After ``FrameTooLarge`` the stream is out of sync (the body of the rejected
  frame would be parsed as headers), so the decoder refuses further input with ``FrameError``; the
  caller closes the connection with the error as its reason.
- ``feed`` returns the complete frames in order; frames that completed before an oversized header in
  the same read are lost with the connection, which is about to close anyway.
"""

from __future__ import annotations

import struct
from typing import Literal

__all__ = [
    "DEFAULT_HEADER_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "FrameTooLarge",
    "encode_frame",
]

DEFAULT_HEADER_BYTES = 4
DEFAULT_MAX_FRAME_BYTES = 1 << 20  # 1 MiB, docs/protocol.md "Framing"

ByteOrder = Literal["big", "little"]

_FORMAT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class FrameError(Exception):
    """The byte stream is not a valid sequence of frames (the connection must be closed)."""


class FrameTooLarge(FrameError):
    """A frame's length exceeds ``max_frame_bytes`` (or, when encoding, what the header can hold)."""

    def __init__(self, length: int, max_frame_bytes: int) -> None:
        self.length = length
        self.max_frame_bytes = max_frame_bytes
        super().__init__(f"frame of {length} bytes exceeds max_frame_bytes={max_frame_bytes}")


def _header_struct(header_bytes: int, byteorder: str) -> struct.Struct:
    code = _FORMAT_CODES.get(header_bytes)
    if code is None:
        raise ValueError(f"header_bytes must be 1, 2, 4 or 8, not {header_bytes!r}")
    if byteorder == "big":
        return struct.Struct(">" + code)
    if byteorder == "little":
        return struct.Struct("<" + code)
    raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")


def _effective_max(header_bytes: int, max_frame_bytes: int) -> int:
    if type(max_frame_bytes) is not int or max_frame_bytes < 0:
        raise ValueError(f"max_frame_bytes must be a non-negative int, not {max_frame_bytes!r}")
    # A 1- or 2-byte header cannot describe more than 255 / 65535 bytes: the cap is whichever is lower.
    return min(max_frame_bytes, (1 << (8 * header_bytes)) - 1)


class FrameDecoder:
    """Incremental decoder: ``feed(bytes) -> [payload, ...]``.

    >>> d = FrameDecoder()
    >>> d.feed(b"\\x00\\x00\\x00\\x02hi\\x00\\x00")
    [b'hi']
    >>> d.at_boundary
    False
    """

    __slots__ = ("_buf", "_failed", "_hsize", "_unpack_from", "header_bytes", "max_frame_bytes")

    def __init__(
        self,
        *,
        header_bytes: int = DEFAULT_HEADER_BYTES,
        byteorder: ByteOrder = "big",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        st = _header_struct(header_bytes, byteorder)
        self.header_bytes = header_bytes
        self.max_frame_bytes = _effective_max(header_bytes, max_frame_bytes)
        self._hsize = header_bytes
        self._unpack_from = st.unpack_from
        self._buf = bytearray()
        self._failed = False

    @property
    def buffer(self) -> bytearray:
        """The bytes of an incomplete frame, held between calls (the same object for the decoder's life)."""
        return self._buf

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete frame held between calls."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (the stream stands between two frames)."""
        return not self._buf

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume ``data``; return every frame it completes, in order.

        Raises ``FrameTooLarge`` as soon as a header announces more than ``max_frame_bytes``, and
        ``FrameError`` if called again after an error.
        """
        if self._failed:
            raise FrameError("frame decoder used after an error: the stream is out of sync")
        buf = self._buf
        buffered = bool(buf)
        if buffered:
            buf += data
            src: bytes | memoryview = memoryview(buf)
        elif type(data) is bytes:
            src = data  # slices of bytes are the payloads themselves: one copy
        else:
            src = memoryview(data)
        n = len(src)
        hsize = self._hsize
        limit = self.max_frame_bytes
        unpack_from = self._unpack_from
        frames: list[bytes] = []
        pos = 0
        try:
            while n - pos >= hsize:
                (length,) = unpack_from(src, pos)
                if length > limit:
                    self._failed = True
                    raise FrameTooLarge(length, limit)
                end = pos + hsize + length
                if end > n:
                    break
                frames.append(bytes(src[pos + hsize : end]))
                pos = end
            if not buffered and pos < n:
                buf += src[pos:]
        finally:
            if type(src) is memoryview:
                src.release()  # a bytearray cannot be resized while a view of it is alive
            if self._failed:
                buf.clear()
        if buffered and pos:
            del buf[:pos]
        return frames

    def eof(self) -> None:
        """The peer closed its side: raise ``FrameError`` if a frame was cut short."""
        if self._buf and not self._failed:
            self._failed = True
            got = len(self._buf)
            self._buf.clear()
            raise FrameError(f"stream ended inside a frame ({got} bytes of it buffered)")


class FrameEncoder:
    """Prefixes payloads with their length in a fixed header format."""

    __slots__ = ("_pack", "header_bytes", "max_frame_bytes")

    def __init__(
        self,
        *,
        header_bytes: int = DEFAULT_HEADER_BYTES,
        byteorder: ByteOrder = "big",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self._pack = _header_struct(header_bytes, byteorder).pack
        self.header_bytes = header_bytes
        self.max_frame_bytes = _effective_max(header_bytes, max_frame_bytes)

    def header(self, length: int) -> bytes:
        """The header for a payload of ``length`` bytes (write it, then the payload: no copy)."""
        if length > self.max_frame_bytes:
            raise FrameTooLarge(length, self.max_frame_bytes)
        return self._pack(length)

    def encode(self, payload: bytes | bytearray | memoryview) -> bytes:
        """Header and payload in one ``bytes`` object."""
        return self.header(len(payload)) + payload


_DEFAULT_ENCODER = FrameEncoder()


def encode_frame(
    payload: bytes | bytearray | memoryview,
    *,
    header_bytes: int = DEFAULT_HEADER_BYTES,
    byteorder: ByteOrder = "big",
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> bytes:
    """One frame; raises ``FrameTooLarge`` if ``payload`` is longer than the cap or the header allows."""
    if (
        header_bytes == DEFAULT_HEADER_BYTES
        and byteorder == "big"
        and max_frame_bytes == DEFAULT_MAX_FRAME_BYTES
    ):
        return _DEFAULT_ENCODER.encode(payload)
    return FrameEncoder(
        header_bytes=header_bytes, byteorder=byteorder, max_frame_bytes=max_frame_bytes
    ).encode(payload)
