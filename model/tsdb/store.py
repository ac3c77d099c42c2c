"""The embedded time-series store: SQLite in WAL mode (DESIGN section 6).

Tables
------
``raw``      one row per metric, entity and collection interval, keyed ``(start, metric, entity)`` so
             that each tick appends at the end of the B-tree (8x the insert rate of a ``(metric, entity,
             start)`` key, measured with ``python -m model.tsdb.perf``);
``minute``, ``hour``, ``day``  summary rows keyed ``(metric, entity, start)``: a series' range is one
             index scan; day rows also carry their end (days last 23 to 25 hours) and local date;
``sessions`` session records ``(entity, key, start, end)`` for the concurrency minute rule;
``coverage`` the spans of time collection covered, which decide which intervals are complete;
``series``   the (metric, entity) pairs seen, so rollups and grooming walk series rather than tables;
``meta``     settings (interval, time zone) and the decided ranges of each granularity.

Every row stores ``(sum, count, max)``; ``catalog`` says what each kind exposes and ``rollup`` states the
rules.  All times are UTC epoch seconds passed in by the caller: nothing here reads a clock.  Each public
write is one transaction with one commit, its rows written with ``executemany``.
"""

from __future__ import annotations

import bisect
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from model.tsdb.catalog import (
    BUILTIN_METRICS,
    Catalog,
    Kind,
    MetricConflict,
    MetricSpec,
    Triple,
    UnknownMetric,
    Value,
)
from model.tsdb.groom import Retention, groom_rows
from model.tsdb.query import (
    SUMMARIES,
    Granularity,
    SeriesResult,
    fmt_days,
    granularity_for_span,
    read_rows,
)
from model.tsdb.rollup import Decided, Span, roll_up
from model.tsdb.timezone import ZoneDays, format_instant

SCHEMA_VERSION = "1"
VALID_INTERVALS_S = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)  # divisors of a minute

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, unit TEXT NOT NULL,
    help TEXT NOT NULL, from_sessions INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS entities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, forgotten_at REAL);
CREATE TABLE IF NOT EXISTS series (
    metric_id INTEGER NOT NULL, entity_id INTEGER NOT NULL, PRIMARY KEY (metric_id, entity_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS raw (
    start INTEGER NOT NULL, metric_id INTEGER NOT NULL, entity_id INTEGER NOT NULL,
    v_sum NUMERIC NOT NULL, v_count INTEGER NOT NULL, v_max NUMERIC,
    PRIMARY KEY (start, metric_id, entity_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute (
    metric_id INTEGER NOT NULL, entity_id INTEGER NOT NULL, start INTEGER NOT NULL,
    v_sum NUMERIC NOT NULL, v_count INTEGER NOT NULL, v_max NUMERIC,
    PRIMARY KEY (metric_id, entity_id, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hour (
    metric_id INTEGER NOT NULL, entity_id INTEGER NOT NULL, start INTEGER NOT NULL,
    v_sum NUMERIC NOT NULL, v_count INTEGER NOT NULL, v_max NUMERIC,
    PRIMARY KEY (metric_id, entity_id, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS day (
    metric_id INTEGER NOT NULL, entity_id INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
    local_date TEXT NOT NULL, v_sum NUMERIC NOT NULL, v_count INTEGER NOT NULL, v_max NUMERIC,
    PRIMARY KEY (metric_id, entity_id, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    entity_id INTEGER NOT NULL, session_key TEXT NOT NULL, start REAL NOT NULL, end REAL,
    PRIMARY KEY (entity_id, session_key, start)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_end ON sessions (end);
CREATE TABLE IF NOT EXISTS coverage (start INTEGER PRIMARY KEY, end INTEGER NOT NULL);
"""

# Several ticks land in one interval only when the caller's clock jitters or a backfill holds
# several events per interval: combine them by the same SUM/SUM/MAX rule as the rollups.
_UPSERT_RAW = """
INSERT INTO raw (start, metric_id, entity_id, v_sum, v_count, v_max) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (start, metric_id, entity_id) DO UPDATE SET
    v_sum = v_sum + excluded.v_sum,
    v_count = v_count + excluded.v_count,
    v_max = max(coalesce(v_max, excluded.v_max), coalesce(excluded.v_max, v_max))
"""


class StoreSettingsMismatch(ValueError):
    """The database was created with another interval or time zone."""


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    raw_rows_written: int
    late_rows_dropped: int
    summary_rows_written: int
    rows_groomed: int
    coverage_spans: int


def read_settings(path: str | os.PathLike[str]) -> tuple[int, str] | None:
    """``(interval_s, time_zone)`` of an existing store, or None if ``path`` holds none."""
    if str(path) == ":memory:" or not os.path.exists(path):
        return None
    db = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
    try:
        rows = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('interval_s', 'time_zone')"))
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    if "interval_s" not in rows:
        return None
    return int(rows["interval_s"]), rows["time_zone"]


def _check_entity(entity: object) -> str:
    if not isinstance(entity, str) or not entity or len(entity) > 256 or not entity.isprintable():
        raise ValueError(f"invalid entity name {entity!r}: 1-256 printable characters")
    return entity


def _check_ts(ts: object, what: str = "ts") -> float:
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        raise ValueError(f"{what} must be finite UTC epoch seconds >= 0, not {ts!r}")
    return float(ts)


class SeriesStore:
    """Metric series with minute/hour/day rollups and retention, in one SQLite file (or ``":memory:"``).

    Thread-safe: one connection guarded by a lock, so the admin API may call ``query`` from a worker
    thread while the learner writes.  Other processes may open the same file (WAL allows concurrent
    readers); only one should write.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        interval_s: int = 1,
        time_zone: str = "UTC",
        lateness_s: float = 5.0,
        retention: Retention = Retention(),  # noqa: B008 - frozen, so one shared default is safe
        gap_tolerance_s: float | None = None,
    ) -> None:
        if isinstance(interval_s, bool) or interval_s not in VALID_INTERVALS_S:
            raise ValueError(f"interval_s must divide a minute ({', '.join(map(str, VALID_INTERVALS_S))})")
        if not isinstance(lateness_s, int | float) or not 0 <= lateness_s < 3600:
            raise ValueError("lateness_s must be between 0 and 3600 seconds")
        self.interval_s = int(interval_s)
        self.zone = ZoneDays(time_zone)
        self.time_zone = time_zone
        self.lateness_s = float(lateness_s)
        self.retention = retention
        # A hole of up to this many seconds between collected intervals is jitter, not a gap.
        self.gap_tolerance_s = float(2 * self.interval_s if gap_tolerance_s is None else gap_tolerance_s)
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise
        self._raw_written = 0
        self._late_dropped = 0
        self._summary_written = 0
        self._groomed = 0

    # -- opening -------------------------------------------------------------------------------------

    def _open(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA cache_size=-32000")  # KiB; keeps the hot raw and series pages cached
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would commit; run the schema statements one by one inside this transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            meta = dict(db.execute("SELECT key, value FROM meta"))
            wanted = {
                "schema_version": SCHEMA_VERSION,
                "interval_s": str(self.interval_s),
                "time_zone": self.time_zone,
            }
            for key, value in wanted.items():
                if key not in meta:
                    db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
                elif meta[key] != value:
                    raise StoreSettingsMismatch(
                        f"{self.path} was created with {key}={meta[key]}, not {value}; "
                        "open it with its own settings or use a new database"
                    )
            known = {
                row[0]: row for row in db.execute("SELECT name, kind, unit, help, from_sessions FROM metrics")
            }
            for spec in BUILTIN_METRICS:
                if spec.name not in known:
                    db.execute(
                        "INSERT INTO metrics (name, kind, unit, help, from_sessions) VALUES (?, ?, ?, ?, ?)",
                        (spec.name, spec.kind.value, spec.unit, spec.help, int(spec.from_sessions)),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS derived (metric_id INTEGER, entity_id INTEGER, start INTEGER, "
            "v_sum NUMERIC, v_count INTEGER, v_max NUMERIC)"
        )
        self._load_state()

    def _load_state(self) -> None:
        db = self._db
        self.catalog = Catalog(())
        self._metric_ids: dict[str, int] = {}
        for metric_id, name, kind, unit, help_text, from_sessions in db.execute(
            "SELECT id, name, kind, unit, help, from_sessions FROM metrics ORDER BY id"
        ):
            self.catalog.add(MetricSpec(name, Kind(kind), unit, help_text, bool(from_sessions)))
            self._metric_ids[name] = metric_id
        for spec in BUILTIN_METRICS:
            if self.catalog.get(spec.name).kind is not spec.kind:
                raise MetricConflict(
                    f"{self.path}: built-in metric {spec.name!r} is stored with another kind"
                )
        self._entities: dict[str, tuple[int, float | None]] = {
            name: (entity_id, forgotten_at)
            for entity_id, name, forgotten_at in db.execute("SELECT id, name, forgotten_at FROM entities")
        }
        self._series: set[tuple[int, int]] = set(db.execute("SELECT metric_id, entity_id FROM series"))
        self._spans: list[Span] = list(db.execute("SELECT start, end FROM coverage ORDER BY start"))
        self._decided = self._read_decided()

    def _read_decided(self) -> Decided:
        meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'decided_%'"))

        def get(name: str) -> tuple[int, int] | None:
            lo, hi = meta.get(f"decided_{name}_lo"), meta.get(f"decided_{name}_hi")
            return None if lo is None or hi is None else (int(lo), int(hi))

        return Decided(get("minute"), get("hour"), get("day"))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._load_state()  # caches may hold ids the rollback removed
                raise

    # -- catalog and entities ------------------------------------------------------------------------

    def register_metric(self, name: str, kind: Kind | str, *, unit: str = "", help: str = "") -> MetricSpec:
        """Declare a metric beyond the built-ins; idempotent for the same kind."""
        spec = MetricSpec(name, Kind(kind), unit, help)
        with self._write() as db:
            if self.catalog.add(spec):
                cur = db.execute(
                    "INSERT INTO metrics (name, kind, unit, help, from_sessions) VALUES (?, ?, ?, ?, 0)",
                    (name, spec.kind.value, unit, help),
                )
                self._metric_ids[name] = int(cur.lastrowid or 0)
        return self.catalog.get(name)

    def metrics(self) -> list[MetricSpec]:
        with self._lock:
            return list(self.catalog)

    def entities(self, *, include_forgotten: bool = False) -> list[str]:
        with self._lock:
            return sorted(n for n, (_, gone) in self._entities.items() if include_forgotten or gone is None)

    def _entity_id(self, db: sqlite3.Connection, name: str, ts: float) -> int:
        known = self._entities.get(name)
        if known is None:
            cur = db.execute("INSERT INTO entities (name) VALUES (?)", (name,))
            entity_id = int(cur.lastrowid or 0)
            self._entities[name] = (entity_id, None)
            return entity_id
        entity_id, forgotten_at = known
        if forgotten_at is not None and ts >= forgotten_at:
            # Data from after the removal: the entity is back in the configuration.
            db.execute("UPDATE entities SET forgotten_at = NULL WHERE id = ?", (entity_id,))
            self._entities[name] = (entity_id, None)
        return entity_id

    def _ensure_series(self, db: sqlite3.Connection, pairs: Iterable[tuple[int, int]]) -> None:
        new = [p for p in set(pairs) if p not in self._series]
        if new:
            db.executemany("INSERT OR IGNORE INTO series VALUES (?, ?)", new)
            self._series.update(new)

    def forget_entity(self, entity: str, now_ts: float) -> bool:
        """An entity removed from the configuration: close its open sessions at ``now_ts`` and let its
        rows age out by retention; the entity itself is purged once the longest retention has passed.
        Returns False for an unknown entity."""
        now_ts = _check_ts(now_ts, "now_ts")
        with self._write() as db:
            known = self._entities.get(entity)
            if known is None:
                return False
            entity_id = known[0]
            db.execute("UPDATE entities SET forgotten_at = ? WHERE id = ?", (now_ts, entity_id))
            db.execute(
                "UPDATE sessions SET end = max(start, ?) WHERE entity_id = ? AND end IS NULL",
                (now_ts, entity_id),
            )
            self._entities[entity] = (entity_id, now_ts)
        return True

    # -- writing -------------------------------------------------------------------------------------

    def _interval_start(self, ts: float) -> int:
        return math.floor(ts / self.interval_s) * self.interval_s

    def _is_late(self, start: int) -> bool:
        decided = self._decided.minute
        return decided is not None and decided[0] <= start - start % 60 < decided[1]

    def _cover(self, db: sqlite3.Connection, start: int, end: int) -> None:
        """Add ``[start, end)`` to coverage, merging spans less than ``gap_tolerance_s`` apart."""
        spans, tol = self._spans, self.gap_tolerance_s
        if spans:
            last_start, last_end = spans[-1]
            if last_start <= start <= last_end + tol:  # the common case: the next tick
                if end > last_end:
                    spans[-1] = (last_start, end)
                    db.execute("UPDATE coverage SET end = ? WHERE start = ?", (end, last_start))
                return
        # Spans are sorted, disjoint and more than `tol` apart: the ones to merge are contiguous.
        j = bisect.bisect_right(spans, (end + tol, math.inf))
        i = j
        while i > 0 and spans[i - 1][1] + tol >= start:
            i -= 1
        merged = spans[i:j]
        new_start = min([start, *(s for s, _ in merged)])
        new_end = max([end, *(e for _, e in merged)])
        if merged == [(new_start, new_end)]:
            return
        db.executemany("DELETE FROM coverage WHERE start = ?", [(s,) for s, _ in merged])
        db.execute("INSERT INTO coverage VALUES (?, ?)", (new_start, new_end))
        spans[i:j] = [(new_start, new_end)]

    def record_coverage(self, start_ts: float, end_ts: float) -> None:
        """Declare that collection ran over ``[start_ts, end_ts)`` (e.g. a backfilled file's span)."""
        start_ts, end_ts = _check_ts(start_ts, "start_ts"), _check_ts(end_ts, "end_ts")
        start = self._interval_start(start_ts)
        end = max(math.ceil(end_ts / self.interval_s) * self.interval_s, start + self.interval_s)
        with self._write() as db:
            self._cover(db, start, end)

    def record(self, ts: float, metric: str, entity: str, value: Value) -> None:
        """One value for the interval holding ``ts``: an occurrence count, a state level, or a duration
        (one observation in seconds, or a ``(sum_s, count)`` pair)."""
        self.record_many(((ts, metric, entity, value),))

    def record_snapshot(self, ts: float, values: Mapping[tuple[str, str], Value]) -> int:
        """One tick of the collector: ``{(metric, entity): value}`` for the interval holding ``ts``, in one
        transaction.  Marks the interval as collected even when ``values`` is empty.  Returns the raw rows
        written (0 when the interval was already summarised: the snapshot is too late)."""
        ts = _check_ts(ts)
        return self._write_rows(
            [(ts, metric, entity, value) for (metric, entity), value in values.items()], [ts]
        )

    def record_many(
        self, rows: Iterable[tuple[float, str, str, Value]], *, mark_coverage: bool = True
    ) -> int:
        """``(ts, metric, entity, value)`` rows in one transaction; returns rows accepted (late rows are
        dropped and counted).  ``mark_coverage=False`` for sparse events whose span the caller declares
        with ``record_coverage``."""
        rows = list(rows)
        ticks = [_check_ts(row[0]) for row in rows] if mark_coverage else []
        return self._write_rows(rows, ticks)

    def _write_rows(self, rows: list[tuple[float, str, str, Value]], ticks: list[float]) -> int:
        prepared: list[tuple[int, str, str, Triple]] = []
        with self._lock:
            for ts, metric, entity, value in rows:
                start = self._interval_start(_check_ts(ts))
                triple = self.catalog.get(metric).encode(value)
                _check_entity(entity)
                if triple is not None:
                    prepared.append((start, metric, entity, triple))
            tick_starts = sorted({self._interval_start(ts) for ts in ticks})
            accepted = [p for p in prepared if not self._is_late(p[0])]
            self._late_dropped += len(prepared) - len(accepted)
            tick_starts = [s for s in tick_starts if not self._is_late(s)]
            if not accepted and not tick_starts:
                return 0
            with self._write() as db:
                params = []
                for start, metric, entity, (v_sum, v_count, v_max) in accepted:
                    entity_id = self._entity_id(db, entity, start)
                    params.append((start, self._metric_ids[metric], entity_id, v_sum, v_count, v_max))
                self._ensure_series(db, ((p[1], p[2]) for p in params))
                db.executemany(_UPSERT_RAW, params)
                for start in tick_starts:
                    self._cover(db, start, start + self.interval_s)
            self._raw_written += len(params)
            return len(params)

    def record_session(self, entity: str, session_key: str, start_ts: float, end_ts: float | None) -> None:
        """A session on ``entity`` from ``start_ts`` until ``end_ts`` (None while open).  Recording the same
        ``(entity, session_key, start_ts)`` again updates its end."""
        self.record_sessions(((entity, session_key, start_ts, end_ts),))

    def record_sessions(self, sessions: Iterable[tuple[str, str, float, float | None]]) -> int:
        params = []
        for entity, key, start_ts, end_ts in sessions:
            _check_entity(entity)
            if not isinstance(key, str) or not key:
                raise ValueError(f"invalid session key {key!r}")
            start = _check_ts(start_ts, "start_ts")
            end = None if end_ts is None else _check_ts(end_ts, "end_ts")
            if end is not None and end < start:
                raise ValueError(f"session {key!r} ends ({end}) before it starts ({start})")
            params.append((entity, key, start, end))
        if not params:
            return 0
        metric_id = self._metric_ids["sessions_connected"]
        with self._write() as db:
            rows = []
            for entity, key, start, end in params:
                rows.append((self._entity_id(db, entity, start), key, start, end))
            self._ensure_series(db, ((metric_id, r[0]) for r in rows))
            db.executemany(
                "INSERT INTO sessions VALUES (?, ?, ?, ?) "
                "ON CONFLICT (entity_id, session_key, start) DO UPDATE SET end = excluded.end",
                rows,
            )
        return len(rows)

    # -- rollup and grooming -------------------------------------------------------------------------

    def rollup(self, now_ts: float) -> int:
        """Summarise every complete interval closed by ``now_ts - lateness_s``; returns rows written.
        Idempotent: calling it again with the same or an earlier ``now_ts`` writes nothing."""
        now_ts = _check_ts(now_ts, "now_ts")
        with self._write() as db:
            written, decided = roll_up(
                db,
                now_ts=now_ts,
                lateness_s=self.lateness_s,
                zone=self.zone,
                spans=self._spans,
                decided=self._decided,
                sessions_metric_id=self._metric_ids["sessions_connected"],
            )
            for name in ("minute", "hour", "day"):
                rng = getattr(decided, name)
                if rng is not None and rng != getattr(self._decided, name):
                    db.executemany(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [(f"decided_{name}_lo", str(rng[0])), (f"decided_{name}_hi", str(rng[1]))],
                    )
            self._decided = decided
        self._summary_written += written
        return written

    def groom(self, now_ts: float) -> int:
        """Delete rows past their table's retention at ``now_ts``; returns rows deleted."""
        now_ts = _check_ts(now_ts, "now_ts")
        with self._write() as db:
            deleted, cutoffs = groom_rows(db, self.retention, now_ts)
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'groomed_%'"))
            for table, cutoff in cutoffs.items():
                key = f"groomed_{table}"
                if key not in meta or float(meta[key]) < cutoff:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, repr(cutoff)))
                    # Notes quote the retention that removed the rows, whoever reads them later.
                    days = repr(self.retention.days(table))
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"retention_{table}", days))
            self._load_state()
        self._groomed += deleted
        return deleted

    # -- reading -------------------------------------------------------------------------------------

    def query(
        self,
        metric: str,
        entity: str,
        start_ts: float,
        end_ts: float,
        granularity: str | Granularity | None = None,
    ) -> SeriesResult:
        """Rows of one series overlapping ``[start_ts, end_ts)`` with the metric kind's exposed value."""
        start_ts, end_ts = _check_ts(start_ts, "start_ts"), _check_ts(end_ts, "end_ts")
        if end_ts <= start_ts:
            raise ValueError("end_ts must be later than start_ts")
        asked = Granularity.parse(granularity)
        with self._lock:
            db = self._db
            if metric not in self.catalog:
                self._load_state()  # another process may have registered it
            spec = self.catalog.get(metric)
            meta = dict(db.execute("SELECT key, value FROM meta"))
            chosen = asked or granularity_for_span(end_ts - start_ts)
            notes: list[str] = []

            def groomed_before(g: Granularity) -> float | None:
                value = meta.get(f"groomed_{g.value}")
                return None if value is None else float(value)

            def removal_note(g: Granularity) -> str:
                stored = meta.get(f"retention_{g.value}")
                days = float(stored) if stored is not None else self.retention.days(g.value)
                return f"{g.value} rows older than {fmt_days(days)} days were removed by retention"

            cut = groomed_before(chosen)
            if cut is not None and start_ts < cut:
                if asked is None and chosen in SUMMARIES[:-1]:
                    note = removal_note(chosen)
                    for coarser in SUMMARIES[SUMMARIES.index(chosen) + 1 :]:
                        chosen = coarser
                        coarse_cut = groomed_before(coarser)
                        if coarse_cut is None or start_ts >= coarse_cut:
                            break
                    notes.append(f"{note}; showing {chosen.value} rows")
                    cut = groomed_before(chosen)
                    if cut is not None and start_ts < cut:
                        notes.append(removal_note(chosen))
                else:
                    notes.append(removal_note(chosen))
            if chosen in SUMMARIES:
                hi = meta.get(f"decided_{chosen.value}_hi")
                if hi is None:
                    notes.append(f"no {chosen.value} rows have been summarised yet")
                elif end_ts > int(hi):
                    notes.append(
                        f"{chosen.value} intervals from {format_instant(int(hi))} on are not summarised yet"
                    )
            row = db.execute("SELECT id FROM entities WHERE name = ?", (entity,)).fetchone()
            raw_rows: list[Any] = []
            if row is None:
                notes.insert(0, f"no data recorded for entity {entity!r}")
            else:
                raw_rows = read_rows(
                    db, chosen, self._metric_ids[metric], row[0], start_ts, end_ts, self.interval_s
                )
        rows = []
        for start, v_sum, v_count, v_max in raw_rows:
            value = spec.expose(v_sum, v_count, v_max)
            if value is not None:
                rows.append((int(start), value))
        return SeriesResult(
            granularity=chosen.value,
            rows=tuple(rows),
            note="; ".join(notes) or None,
            metric=metric,
            entity=entity,
            kind=spec.kind.value,
            start_ts=start_ts,
            end_ts=end_ts,
        )

    def statistics(self) -> StoreStatistics:
        with self._lock:
            return StoreStatistics(
                raw_rows_written=self._raw_written,
                late_rows_dropped=self._late_dropped,
                summary_rows_written=self._summary_written,
                rows_groomed=self._groomed,
                coverage_spans=len(self._spans),
            )

    def coverage(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SeriesStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SeriesStore", "StoreSettingsMismatch", "StoreStatistics", "UnknownMetric", "read_settings"]
