"""Reading log files: plain, gzip or standard input, in blocks, starting near a given time.

The proxy's access log is one file that grows for as long as nobody rotates it, so the job that runs
every night must not read a year of log to find one day.  Lines are written in time order (each when
its connection or batch ends), so a binary search over byte offsets finds the first line of the day;
reading starts ``SEEK_SLACK_S`` earlier and stops once a line ``SEEK_SLACK_S`` past the day's end has
been seen, so lines written slightly out of order are still read.  ``seek=False`` reads everything
(for files that are not in time order, such as several logs concatenated).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from model.usage.errors import UsageError
from model.usage.localtime import US_PER_S
from model.usage.parse import Format, detect_format, line_time_us

SEEK_SLACK_S = 3600
#: Stop bisecting when the remaining span is this small; the rest is read line by line.
SEEK_SPAN_BYTES = 256 * 1024
#: Lines looked at after a probe offset to find one with a readable time.
PROBE_LINES = 64
BLOCK_BYTES = 4 * 1024 * 1024
DETECT_LINES = 100


@dataclass(slots=True)
class Input:
    """One open input.  ``position()`` is how far the underlying file has been read (bytes)."""

    path: str
    raw: IO[bytes]
    stream: IO[bytes]
    size: int
    seekable: bool
    fmt: Format | None = None
    start_offset: int = 0

    def position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def blocks(self) -> Iterator[list[bytes]]:
        readlines = self.stream.readlines
        while True:
            try:
                block = readlines(BLOCK_BYTES)
            except (OSError, EOFError, zlib.error) as exc:  # a damaged or truncated .gz, a failing disk
                raise UsageError(f"cannot read input {self.path}: {exc}") from None
            if not block:
                return
            yield block

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        if self.raw is not sys.stdin.buffer:
            self.raw.close()


def open_input(path: str) -> Input:
    """Open ``path`` (``-`` is standard input; ``*.gz`` is decompressed); raises UsageError."""
    if path == "-":
        return Input(path=path, raw=sys.stdin.buffer, stream=sys.stdin.buffer, size=0, seekable=False)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read input {path}: {exc.strerror or exc}") from None
    try:
        size = os.fstat(raw.fileno()).st_size
        if pathlib.Path(path).suffix == ".gz":
            return Input(path=path, raw=raw, stream=gzip.GzipFile(fileobj=raw), size=size, seekable=False)
    except OSError as exc:
        raw.close()
        raise UsageError(f"cannot read input {path}: {exc.strerror or exc}") from None
    return Input(path=path, raw=raw, stream=raw, size=size, seekable=True)


def sniff_format(inp: Input) -> Format | None:
    """The format of an input from its first non-blank line, without consuming anything."""
    try:
        if inp.seekable:
            here = inp.raw.tell()
            head = [inp.raw.readline() for _ in range(DETECT_LINES)]
            inp.raw.seek(here)
        elif isinstance(inp.stream, gzip.GzipFile):
            head = [inp.stream.peek(64 * 1024)]
        else:
            head = [inp.stream.peek(64 * 1024)] if hasattr(inp.stream, "peek") else []
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"cannot read input {inp.path}: {exc}") from None
    for chunk in head:
        for line in chunk.splitlines():
            fmt = detect_format(line)
            if fmt is not None:
                return fmt
    return None


def _first_time_after(f: IO[bytes], pos: int, fmt: Format) -> tuple[int | None, int]:
    """Time and offset of the first readable line starting after byte ``pos`` (or at 0)."""
    if pos > 0:
        f.seek(pos - 1)
        f.readline()  # finish the line that ``pos`` falls in (or the one ending right before it)
    else:
        f.seek(0)
    for _ in range(PROBE_LINES):
        start = f.tell()
        line = f.readline()
        if not line:
            return None, start
        t = line_time_us(fmt, line)
        if t is not None:
            return t, start
    return None, f.tell()


def seek_to(inp: Input, fmt: Format, target_us: int) -> int:
    """Position a seekable input at the start of a line shortly before the first line at or after
    ``target_us - SEEK_SLACK_S``; returns that byte offset."""
    if not inp.seekable or inp.size <= SEEK_SPAN_BYTES:
        return 0
    f = inp.raw
    target = target_us - SEEK_SLACK_S * US_PER_S
    lo, hi = 0, inp.size
    while hi - lo > SEEK_SPAN_BYTES:
        mid = (lo + hi) // 2
        t, start = _first_time_after(f, mid, fmt)
        if t is not None and t < target and start < hi:
            lo = start
        else:
            hi = mid
    if lo > 0:
        f.seek(lo - 1)
        f.readline()
        lo = f.tell()
    f.seek(lo)
    return lo


def count_newlines(path: str, end: int) -> int:
    """Lines before byte ``end`` of a plain file (to turn line numbers after a seek into absolute ones)."""
    n = 0
    with open(path, "rb") as f:
        left = end
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n
