"""The summarisation rules: which intervals are complete, and how minute, hour and day rows are built.

Theory of operation
-------------------
Raw rows hold one ``(sum, count, max)`` per metric, entity and collection interval (1 s, 5 s, ...).
Summary rows at minute, hour and day granularity hold the same triple, so every coarser row is the
SUM/SUM/MAX of the finer rows inside it: hour rows are built from minute rows and day rows from hour rows,
never from raw rows again, and a duration's hour average is exact (``catalog`` explains the kinds).

Rules, in the order ``roll_up`` applies them:

1. **Closed.**  A minute is summarised only once it has ended and the lateness lag has passed:
   ``minute_start + 60 + lateness_s <= now``.  An hour once all its minutes have been decided, a day once
   all its hours have.  The interval still open never gets a row.
2. **Complete.**  Collection must have covered the interval.  Coverage is a set of spans (each collected
   interval extends the current span; a hole of at most ``gap_tolerance_s`` does not break it).  A minute
   is complete when one span contains all of it; an hour when its first and last minutes are complete; a
   day when its first and last hours are.  So the partial first interval after collection (re)started and
   the partial interval in which it stopped get no row, and a gap leaves no rows at all for the minutes it
   swallowed: missing, not zero.
3. **Decided once.**  Each granularity keeps the range of intervals already decided (summarised or
   skipped as incomplete).  Rolling up again decides only what lies outside that range, and rows are
   inserted with ``INSERT OR IGNORE``: rollups are idempotent and rows are immutable once written.  An event
   for an already decided minute is too late and is dropped by the store (counted); events older than
   everything decided (a backfill) are accepted and their periods decided on the next rollup.
4. **Concurrency minute rule.**  ``sessions_connected`` for a minute counts every session present at any
   moment of the minute, even sessions that never overlap (one ending at :10 and one starting at :50 make
   2).  The minute value is the MAX of that count and of any gauge samples recorded in the minute; the
   hour value is the MAX of its minutes (it is a STATE metric).
5. **Days** are local days of the configured time zone snapped to UTC hours (``timezone``).
"""

from __future__ import annotations

import bisect
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from model.tsdb.timezone import ZoneDays

MINUTE_S = 60
HOUR_S = 3600
# Bounds the size of one GROUP BY (and its temporary sort) when a long stretch is rolled up at once.
CHUNK_S = 15 * MINUTE_S

Span = tuple[int, int]
Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Decided:
    """Per granularity, the ``[lo, hi)`` range of intervals already decided, or None."""

    minute: Range | None = None
    hour: Range | None = None
    day: Range | None = None


def floor_to(ts: float, step: int) -> int:
    return math.floor(ts / step) * step


def ceil_to(ts: float, step: int) -> int:
    return math.ceil(ts / step) * step


def covered(spans: Sequence[Span], start: int, end: int) -> bool:
    """True when one span (sorted, disjoint) contains ``[start, end)``."""
    i = bisect.bisect_right(spans, (start, math.inf)) - 1
    return i >= 0 and spans[i][0] <= start and spans[i][1] >= end


def minute_complete(spans: Sequence[Span], minute: int) -> bool:
    return covered(spans, minute, minute + MINUTE_S)


def hour_complete(spans: Sequence[Span], hour: int) -> bool:
    return minute_complete(spans, hour) and minute_complete(spans, hour + HOUR_S - MINUTE_S)


def day_complete(spans: Sequence[Span], start: int, end: int) -> bool:
    return hour_complete(spans, start) and hour_complete(spans, end - HOUR_S)


def undecided(decided: Range | None, eligible: Range) -> list[Range]:
    """The parts of ``eligible`` outside ``decided`` (which only ever grows at either end)."""
    lo, hi = eligible
    if hi <= lo:
        return []
    if decided is None:
        return [(lo, hi)]
    parts = []
    if lo < decided[0]:
        parts.append((lo, min(hi, decided[0])))
    if hi > decided[1]:
        parts.append((max(lo, decided[1]), hi))
    return parts


def widen(decided: Range | None, eligible: Range) -> Range | None:
    lo, hi = eligible
    if hi <= lo:
        return decided
    if decided is None:
        return eligible
    return min(decided[0], lo), max(decided[1], hi)


def complete_minute_runs(spans: Sequence[Span], part: Range) -> list[Range]:
    """Maximal runs of complete minutes inside ``part``, cut into chunks of at most CHUNK_S."""
    runs: list[Range] = []
    for span_start, span_end in spans:
        a = max(part[0], ceil_to(span_start, MINUTE_S))
        b = min(part[1], floor_to(span_end, MINUTE_S))
        while a < b:
            c = min(b, floor_to(a + CHUNK_S, MINUTE_S))
            runs.append((a, c))
            a = c
    return runs


def complete_hour_runs(spans: Sequence[Span], part: Range) -> list[Range]:
    runs: list[Range] = []
    for hour in range(part[0], part[1], HOUR_S):
        if not hour_complete(spans, hour):
            continue
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + HOUR_S)
        else:
            runs.append((hour, hour + HOUR_S))
    return runs


def concurrent_sessions(
    sessions: Iterable[tuple[int, float, float | None]], run: Range
) -> dict[tuple[int, int], int]:
    """Concurrency minute rule: ``{(entity_id, minute_start): sessions present}`` for minutes in ``run``.

    A session ``[start, end)`` is present in minute ``m`` when ``start < m + 60`` and ``end > m``; a
    zero-length session is present in the minute holding its instant; an open one (``end`` None) up to
    the end of ``run`` (which only holds closed minutes).
    """
    lo, hi = run
    n = (hi - lo) // MINUTE_S
    diffs: dict[int, list[int]] = {}
    for entity_id, start, end in sessions:
        first = max(lo, floor_to(start, MINUTE_S))
        if end is None:
            last = hi - MINUTE_S
        elif end <= start:
            last = floor_to(start, MINUTE_S)
        else:
            last = ceil_to(end, MINUTE_S) - MINUTE_S  # the minute holding the instant just before `end`
        last = min(last, hi - MINUTE_S)
        if last < first:
            continue
        diff = diffs.get(entity_id)
        if diff is None:
            diff = diffs[entity_id] = [0] * (n + 1)
        diff[(first - lo) // MINUTE_S] += 1
        diff[(last - lo) // MINUTE_S + 1] -= 1
    out: dict[tuple[int, int], int] = {}
    for entity_id, diff in diffs.items():
        level = 0
        for i in range(n):
            level += diff[i]
            if level:
                out[(entity_id, lo + i * MINUTE_S)] = level
    return out


_SESSIONS_IN = (
    "SELECT entity_id, start, end FROM sessions WHERE end IS NULL AND start < :hi "
    "UNION ALL SELECT entity_id, start, end FROM sessions WHERE end >= :lo AND start < :hi"
)

_MINUTES_FROM_RAW = """
INSERT OR IGNORE INTO minute (metric_id, entity_id, start, v_sum, v_count, v_max)
SELECT metric_id, entity_id, m, SUM(v_sum), SUM(v_count), MAX(v_max) FROM (
    SELECT metric_id, entity_id, start - start % 60 AS m, v_sum, v_count, v_max
      FROM raw WHERE start >= :lo AND start < :hi
    UNION ALL
    SELECT metric_id, entity_id, start AS m, v_sum, v_count, v_max FROM temp.derived
) GROUP BY metric_id, entity_id, m
"""

# CROSS JOIN makes SQLite walk the few series and range-scan each one's primary key, rather than scan
# the whole minute table for a time range.
_HOURS_FROM_MINUTES = """
INSERT OR IGNORE INTO hour (metric_id, entity_id, start, v_sum, v_count, v_max)
SELECT m.metric_id, m.entity_id, m.start - m.start % 3600, SUM(m.v_sum), SUM(m.v_count), MAX(m.v_max)
  FROM series AS s CROSS JOIN minute AS m
 WHERE m.metric_id = s.metric_id AND m.entity_id = s.entity_id AND m.start >= :lo AND m.start < :hi
 GROUP BY m.metric_id, m.entity_id, m.start - m.start % 3600
"""

_DAY_FROM_HOURS = """
INSERT OR IGNORE INTO day (metric_id, entity_id, start, end, local_date, v_sum, v_count, v_max)
SELECT h.metric_id, h.entity_id, :lo, :hi, :local_date, SUM(h.v_sum), SUM(h.v_count), MAX(h.v_max)
  FROM series AS s CROSS JOIN hour AS h
 WHERE h.metric_id = s.metric_id AND h.entity_id = s.entity_id AND h.start >= :lo AND h.start < :hi
 GROUP BY h.metric_id, h.entity_id
"""


def roll_up(
    db: sqlite3.Connection,
    *,
    now_ts: float,
    lateness_s: float,
    zone: ZoneDays,
    spans: Sequence[Span],
    decided: Decided,
    sessions_metric_id: int,
) -> tuple[int, Decided]:
    """Summarise every closed, complete, undecided interval; return (rows written, new decided ranges).

    Runs inside the caller's transaction.
    """
    before = db.total_changes
    minute_range = decided.minute
    if spans:
        eligible = (floor_to(spans[0][0], MINUTE_S), floor_to(now_ts - lateness_s, MINUTE_S))
        for part in undecided(minute_range, eligible):
            for run in complete_minute_runs(spans, part):
                _minutes(db, run, sessions_metric_id)
        minute_range = widen(minute_range, eligible)

    hour_range = decided.hour
    if minute_range is not None:
        eligible = (ceil_to(minute_range[0], HOUR_S), floor_to(minute_range[1], HOUR_S))
        for part in undecided(hour_range, eligible):
            for lo, hi in complete_hour_runs(spans, part):
                db.execute(_HOURS_FROM_MINUTES, {"lo": lo, "hi": hi})
        hour_range = widen(hour_range, eligible)

    day_range = decided.day
    if hour_range is not None:
        days = zone.days_within(*hour_range)
        if days:
            for local_date, lo, hi in days:
                if day_range is not None and day_range[0] <= lo and hi <= day_range[1]:
                    continue
                if day_complete(spans, lo, hi):
                    db.execute(_DAY_FROM_HOURS, {"lo": lo, "hi": hi, "local_date": local_date.isoformat()})
            day_range = widen(day_range, (days[0][1], days[-1][2]))
    return db.total_changes - before, Decided(minute_range, hour_range, day_range)


def _minutes(db: sqlite3.Connection, run: Range, sessions_metric_id: int) -> None:
    lo, hi = run
    db.execute("DELETE FROM temp.derived")
    present = concurrent_sessions(db.execute(_SESSIONS_IN, {"lo": lo, "hi": hi}), run)
    if present:
        db.executemany(
            "INSERT INTO temp.derived VALUES (?, ?, ?, 0, 0, ?)",
            [(sessions_metric_id, entity_id, minute, n) for (entity_id, minute), n in present.items()],
        )
    db.execute(_MINUTES_FROM_RAW, {"lo": lo, "hi": hi})
