"""Where usage files live, their line formats, and writing them reproducibly.

Layout under the output directory (docs/usage.md shows it whole)::

    YYYY/MM/DD/<source>.stats.gz      the day's counts: group|client|resource|counts..., sorted bytewise
    YYYY/MM/DD/<source>.ips.gz        the day's requests per client IP: ip|requests|denied, sorted
    YYYY/MM/DD/<source>.sessions.gz   sessions still open at the end of the day (JSON lines, by key)
    YYYY/MM/DD/<source>.summary.json  what the run read and found (lines, bad lines, sessions)
    YYYY/MM/report.json|.csv|.html    the month

Every ``.gz`` is written with ``mtime=0`` and no file name in its header, and every file goes to a
temporary name first and is renamed into place, so a re-run produces byte-identical files and a crash
never leaves half a file under the real name.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import IO

import orjson

from model.usage.metadata import Metadata
from model.usage.sessionize import OpenSession

STATS_FIELDS = ("requests", "suppressed", "denied", "bytes_in", "bytes_out", "sessions")
GZIP_LEVEL = 1  # bench usage: level 6 costs 5x the CPU of level 1 for files 20% smaller
_SOURCE_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f%|\x7f]")
_UNESCAPE_RE = re.compile(r"%([0-9A-F]{2})")


def valid_source(name: str) -> bool:
    """A source name becomes part of file names: letters, digits, ``._-``, not starting with a dot."""
    return _SOURCE_RE.fullmatch(name) is not None


# -- paths ------------------------------------------------------------------------------------------


def day_dir(out: pathlib.Path, day: dt.date) -> pathlib.Path:
    return out / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"


def month_dir(out: pathlib.Path, year: int, month: int) -> pathlib.Path:
    return out / f"{year:04d}" / f"{month:02d}"


def client_file_name(client: str) -> str:
    """A client's own report file: its id percent-encoded down to ``[A-Za-z0-9_-]``, plus ``.json``."""
    from urllib.parse import quote

    name = quote(client, safe="").replace(".", "%2E").replace("~", "%7E")
    if len(name) > 200:  # file names stop at 255 bytes: keep a prefix and make it unique with a digest
        import hashlib

        name = name[:150] + "-" + hashlib.sha256(client.encode("utf-8")).hexdigest()[:32]
    return name + ".json"


def stats_path(out: pathlib.Path, day: dt.date, source: str) -> pathlib.Path:
    return day_dir(out, day) / f"{source}.stats.gz"


def ips_path(out: pathlib.Path, day: dt.date, source: str) -> pathlib.Path:
    return day_dir(out, day) / f"{source}.ips.gz"


def sessions_path(out: pathlib.Path, day: dt.date, source: str) -> pathlib.Path:
    return day_dir(out, day) / f"{source}.sessions.gz"


def summary_path(out: pathlib.Path, day: dt.date, source: str) -> pathlib.Path:
    return day_dir(out, day) / f"{source}.summary.json"


# -- text fields ------------------------------------------------------------------------------------


def escape(field: str) -> str:
    """Make a name safe inside a ``|``-separated line: ``%``, ``|`` and control characters (C0 and
    DEL) are percent-encoded.

    The escaped form is what sorts (bytewise), consistently everywhere.  No escaped name contains
    ``|`` or a byte below 0x20, which the month-end sort relies on (``monthly``).
    """
    if _NEEDS_ESCAPE.search(field) is None:
        return field
    return _NEEDS_ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", field)


def unescape(field: str) -> str:
    if "%" not in field:
        return field
    return _UNESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), field)


def stats_lines(clients: dict[str, dict[str, list[int]]], metadata: Metadata) -> list[str]:
    """Every ``group|client|resource|counts`` line of a day's counters (text, unsorted)."""
    out: list[str] = []
    append = out.append
    escaped: dict[str, str] = {}  # resources and groups repeat: escape each once
    per_resource = metadata.resources is not None
    for client, per in clients.items():
        c_esc = escape(client)
        g = metadata.client_group(client)
        g_esc = escape(g)
        for resource, c in per.items():
            r_esc = escaped.get(resource)
            if r_esc is None:
                r_esc = escaped[resource] = escape(resource)
            if per_resource:
                g_esc = escape(metadata.group(client, resource))
            append(f"{g_esc}|{c_esc}|{r_esc}|{c[0]}|{c[1]}|{c[2]}|{c[3]}|{c[4]}|{c[5]}\n")
    return out


def sort_lines(lines: list[str]) -> None:
    """Sort text lines in the byte order of their UTF-8 encoding, never a locale's.

    For valid Unicode (no lone surrogates: orjson rejects them, combined lines are decoded with
    ``backslashreplace``) code-point order is exactly UTF-8 byte order, so Python's own string order
    is the byte order and no encoding is needed to sort.
    """
    lines.sort()


def ip_line(ip: str, requests: int, denied: int) -> str:
    return f"{escape(ip)}|{requests}|{denied}\n"


def session_line(o: OpenSession) -> bytes:
    record = {"client": o.client, "ip": o.ip, "key": o.key, "last_us": o.last_us, "resources": o.resources}
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


class BadSessionLine(ValueError):
    pass


def parse_session_line(line: bytes) -> OpenSession:
    try:
        d = orjson.loads(line)
        resources = {}
        for res, r in d["resources"].items():
            if len(r) != 6 or not all(type(x) is int for x in r):
                raise ValueError(res)
            resources[res] = tuple(r)
        key, client, ip, last_us = d["key"], d["client"], d["ip"], d["last_us"]
        if type(key) is not str or type(client) is not str or type(ip) is not str or type(last_us) is not int:
            raise ValueError("a field has the wrong type")
        return OpenSession(key=key, client=client, ip=ip, last_us=last_us, resources=resources)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadSessionLine(f"not a carried session: {exc}") from None


# -- writing ----------------------------------------------------------------------------------------


class AtomicFile:
    """``with AtomicFile(path) as f:`` writes bytes to a temporary sibling, renamed over ``path`` on
    success and removed on failure."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.tmp, "wb")
        return self._file

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._file is not None
        self._file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class GzipLines:
    """``with GzipLines(path) as write:`` gzip with a fixed header (mtime 0, no name), atomically."""

    def __init__(self, path: pathlib.Path) -> None:
        self._atomic = AtomicFile(path)
        self._gz: gzip.GzipFile | None = None
        self._buf: list[bytes] = []

    def __enter__(self) -> GzipLines:
        raw = self._atomic.__enter__()
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL)
        return self

    def write(self, line: bytes) -> None:
        self._buf.append(line)
        if len(self._buf) >= 4096:
            self.flush()

    def writelines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.write(line)

    def write_text(self, lines: list[str], chunk_lines: int = 16384) -> None:
        """Text lines (each ending in a newline), UTF-8, in large pieces."""
        self.flush()
        assert self._gz is not None
        for i in range(0, len(lines), chunk_lines):
            self._gz.write("".join(lines[i : i + chunk_lines]).encode("utf-8"))

    def flush(self) -> None:
        assert self._gz is not None
        if self._buf:
            self._gz.write(b"".join(self._buf))
            self._buf.clear()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._gz is not None
        try:
            if exc_type is None:
                self.flush()
            self._gz.close()
        finally:
            self._atomic.__exit__(exc_type, exc, tb)


def write_bytes(path: pathlib.Path, data: bytes) -> None:
    with AtomicFile(path) as f:
        f.write(data)


def read_gz_lines(path: pathlib.Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as f:
        yield from f
