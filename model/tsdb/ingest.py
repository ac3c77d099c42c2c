"""Backfill from JSON Lines: raw events and session records, one JSON object per line.

Two shapes::

    {"ts": "2024-03-10T12:00:05Z", "metric": "bytes_in", "entity": "game/s1", "value": 512}
    {"entity": "game/s1", "session": "c42", "start": "2024-03-10T12:00:05Z", "end": null}

Times are ISO-8601 (``Z`` or an offset; no offset means UTC) or epoch seconds.  A duration's ``value``
may also be ``[sum_s, count]``.  Blank lines and lines starting with ``#`` are skipped.  A bad line is
reported with its number and skipped; the rest of the file still loads.

A backfilled file says nothing about ticks, so the span from its earliest to its latest instant is
declared as collected (``SeriesStore.record_coverage``): the partial first and last minutes of the file get
no rows, every minute in between does.  Events for minutes already summarised are too late and dropped
(and counted), as for live collection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from model.tsdb.catalog import UnknownMetric
from model.tsdb.store import SeriesStore
from model.tsdb.timezone import parse_instant

MAX_LINE_BYTES = 64 * 1024
BATCH_ROWS = 5_000
MAX_ERRORS_KEPT = 1_000  # bad lines beyond this are counted, not kept


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    message: str


@dataclass(frozen=True, slots=True)
class EventLine:
    ts: float
    metric: str
    entity: str
    value: object


@dataclass(frozen=True, slots=True)
class SessionLine:
    entity: str
    session: str
    start_ts: float
    end_ts: float | None


@dataclass(frozen=True, slots=True)
class IngestReport:
    events: int
    late_events: int
    sessions: int
    bad_lines: int
    errors: tuple[LineError, ...]  # the first MAX_ERRORS_KEPT bad lines
    first_ts: float | None
    last_ts: float | None


def _text(obj: dict[str, object], key: str) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


def _instant(obj: dict[str, object], key: str) -> float:
    value = obj.get(key)
    if value is None:
        raise ValueError(f"missing {key!r}")
    if not isinstance(value, str | int | float):
        raise ValueError(f"{key!r} must be an ISO-8601 time or epoch seconds")
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise ValueError(f"{key!r}: {exc}") from None


def parse_line(line: str | bytes, store: SeriesStore) -> EventLine | SessionLine | None:
    """One line → an event, a session record, or None (blank or comment).  Raises ValueError."""
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"line longer than {MAX_LINE_BYTES} bytes")
    stripped = line.strip()
    if not stripped or stripped[:1] in ("#", b"#"):
        return None
    try:
        obj = orjson.loads(stripped)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    if "session" in obj:
        extra = set(obj) - {"entity", "session", "start", "end"}
        if extra:
            raise ValueError(f"unknown key(s) in a session record: {', '.join(sorted(extra))}")
        start = _instant(obj, "start")
        end = None if obj.get("end") is None else _instant(obj, "end")
        if end is not None and end < start:
            raise ValueError("session ends before it starts")
        return SessionLine(_text(obj, "entity"), _text(obj, "session"), start, end)
    extra = set(obj) - {"ts", "metric", "entity", "value"}
    if extra:
        raise ValueError(f"unknown key(s) in an event: {', '.join(sorted(extra))}")
    metric = _text(obj, "metric")
    entity = _text(obj, "entity")
    if "value" not in obj:
        raise ValueError("missing 'value'")
    try:
        spec = store.catalog.get(metric)
    except UnknownMetric as exc:
        raise ValueError(str(exc)) from None
    value = obj["value"]
    if isinstance(value, list):
        value = tuple(value)
    spec.encode(value)  # validates
    if len(entity) > 256 or not entity.isprintable():
        raise ValueError("entity must be 1-256 printable characters")
    return EventLine(_instant(obj, "ts"), metric, entity, value)


def ingest_lines(store: SeriesStore, lines: Iterable[str | bytes]) -> IngestReport:
    """Load events and sessions in batches of BATCH_ROWS, then declare the file's span as collected."""
    events = late = sessions = bad = 0
    errors: list[LineError] = []
    first = math.inf
    last = -math.inf
    event_batch: list[tuple[float, str, str, object]] = []
    session_batch: list[tuple[str, str, float, float | None]] = []

    def flush() -> None:
        nonlocal events, late, sessions
        if event_batch:
            accepted = store.record_many(event_batch, mark_coverage=False)  # type: ignore[arg-type]
            events += accepted
            late += len(event_batch) - accepted
            event_batch.clear()
        if session_batch:
            sessions += store.record_sessions(session_batch)
            session_batch.clear()

    for number, line in enumerate(lines, start=1):
        try:
            parsed = parse_line(line, store)
        except ValueError as exc:
            bad += 1
            if len(errors) < MAX_ERRORS_KEPT:
                errors.append(LineError(number, str(exc)))
            continue
        if parsed is None:
            continue
        if isinstance(parsed, EventLine):
            event_batch.append((parsed.ts, parsed.metric, parsed.entity, parsed.value))
            first = min(first, parsed.ts)
            # The event's whole interval was collected.
            last = max(last, math.floor(parsed.ts / store.interval_s) * store.interval_s + store.interval_s)
        else:
            session_batch.append((parsed.entity, parsed.session, parsed.start_ts, parsed.end_ts))
            first = min(first, parsed.start_ts)
            last = max(last, parsed.start_ts if parsed.end_ts is None else parsed.end_ts)
        if len(event_batch) + len(session_batch) >= BATCH_ROWS:
            flush()
    flush()
    if first < last:
        store.record_coverage(first, last)
    return IngestReport(
        events=events,
        late_events=late,
        sessions=sessions,
        bad_lines=bad,
        errors=tuple(errors),
        first_ts=None if first == math.inf else first,
        last_ts=None if last == -math.inf else last,
    )


def ingest_file(store: SeriesStore, path: str) -> IngestReport:
    """``ingest_lines`` over a file, read line by line in binary (memory bounded by a batch)."""
    with open(path, "rb") as f:
        return ingest_lines(store, f)
