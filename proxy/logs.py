"""Structured logs and the access log.

Operational events are one JSON object per line (orjson): ``{"ts": ..., "level": ..., "event": ...,
...}`` with snake_case past-tense event names and unit-suffixed keys.  The access log is a separate
stream, one line per connection (format in docs/access-log.md), buffered in memory and written once
per tick so the data plane never blocks on a write per connection.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def iso_utc(ts: float) -> str:
    """``2026-11-22T19:30:00.123456Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Logger:
    """Minimal JSON-lines logger.  Not for per-message use: the hot path logs nothing."""

    def __init__(self, level: str = "info", stream: IO[str] | None = None) -> None:
        self.threshold = LEVELS[level]
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self._owned = False

    @classmethod
    def to_file(cls, level: str, path: str) -> Logger:
        if path == "-":
            return cls(level, sys.stderr)
        logger = cls(level, open(path, "a", encoding="utf-8", buffering=1))
        logger._owned = True
        return logger

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS[level]

    def log(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        record = {"ts": iso_utc(time.time()), "level": level, "event": event, **fields}
        try:
            self.stream.write(orjson.dumps(record, default=str).decode() + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log stream must never take the proxy down

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)

    def close(self) -> None:
        if self._owned:
            self.stream.close()


class AccessLog:
    """Buffers access-log lines and writes them in one call per flush."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lines: list[bytes] = []
        self._file: IO[bytes] | None = None
        if path == "-":
            self._file = sys.stdout.buffer
        elif path is not None:
            self._file = open(path, "ab")

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def add(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        if self._file is None or not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        try:
            self._file.write(data)
            self._file.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.flush()
        if self._file is not None and self.path != "-":
            self._file.close()
        self._file = None
