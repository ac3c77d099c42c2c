"""Retention ("grooming"): how long each table keeps its rows.

A row is kept while its interval start lies within the retention window, ``start >= now - days``; so
at ``now`` exactly ``minute_days`` after a minute began, that minute row is still there, and one second
later it is gone.  Session records are kept for ``session_days`` after they END (open sessions are kept).

An entity removed from the configuration (``SeriesStore.forget_entity``) is not purged at once: its rows
keep their history and leave by the same rule as everyone else's, table by table, and once the longest
retention has passed since the removal the entity itself is forgotten.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

DAY_S = 86_400

# table → Retention field, in the order rows are groomed.
TABLES: tuple[tuple[str, str], ...] = (
    ("raw", "raw_days"),
    ("minute", "minute_days"),
    ("hour", "hour_days"),
    ("day", "day_days"),
)


@dataclass(frozen=True, slots=True)
class Retention:
    raw_days: float = 7
    minute_days: float = 3
    hour_days: float = 32
    day_days: float = 90
    session_days: float = 90

    def __post_init__(self) -> None:
        for name in ("raw_days", "minute_days", "hour_days", "day_days", "session_days"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"retention {name} must be a positive number of days, not {value!r}")

    def days(self, table: str) -> float:
        return float(getattr(self, "session_days" if table == "sessions" else f"{table}_days"))

    def cutoff(self, table: str, now_ts: float) -> float:
        """Rows of ``table`` starting (sessions: ending) before this instant are removed."""
        return now_ts - self.days(table) * DAY_S

    @property
    def longest_days(self) -> float:
        return max(self.raw_days, self.minute_days, self.hour_days, self.day_days, self.session_days)


def groom_rows(db: sqlite3.Connection, retention: Retention, now_ts: float) -> tuple[int, dict[str, float]]:
    """Delete rows past retention; return (rows deleted, {table: cutoff}).  Inside the caller's transaction."""
    before = db.total_changes
    cutoffs: dict[str, float] = {}
    series = db.execute("SELECT metric_id, entity_id FROM series").fetchall()
    for table, _field in TABLES:
        cutoff = retention.cutoff(table, now_ts)
        cutoffs[table] = cutoff
        if table == "raw":
            # raw is keyed by start first: one range delete.
            db.execute("DELETE FROM raw WHERE start < ?", (cutoff,))
        else:
            # Summary tables are keyed (metric, entity, start): one range delete per series.
            db.executemany(
                f"DELETE FROM {table} WHERE metric_id = ? AND entity_id = ? AND start < ?",
                [(m, e, cutoff) for m, e in series],
            )
    cutoffs["sessions"] = retention.cutoff("sessions", now_ts)
    db.execute("DELETE FROM sessions WHERE end < ?", (cutoffs["sessions"],))
    deleted = db.total_changes - before

    # Coverage spans only steer rollups; keep them as long as any row they could decide.
    db.execute("DELETE FROM coverage WHERE end < ?", (now_ts - retention.longest_days * DAY_S,))

    # Entities removed from the configuration, whose every row has now outlived its retention.
    gone = [
        row[0]
        for row in db.execute(
            "SELECT id FROM entities WHERE forgotten_at IS NOT NULL AND forgotten_at < ?",
            (now_ts - retention.longest_days * DAY_S,),
        )
    ]
    for entity_id in gone:
        for table in ("minute", "hour", "day"):
            db.execute(
                f"DELETE FROM {table} WHERE entity_id = ? AND metric_id IN "
                "(SELECT metric_id FROM series WHERE entity_id = ?)",
                (entity_id, entity_id),
            )
        db.execute("DELETE FROM sessions WHERE entity_id = ?", (entity_id,))
        db.execute("DELETE FROM series WHERE entity_id = ?", (entity_id,))
        db.execute("DELETE FROM entities WHERE id = ?", (entity_id,))
    return deleted, cutoffs
