"""Reading series: granularity by span, exposed values by kind, notes about missing rows; ``GET /series``.

A query returns the rows whose interval overlaps ``[start_ts, end_ts)``.  Unless a granularity is asked
for, the span picks it (DESIGN section 6): up to 1 hour → minute rows, up to 31 days → hour rows, longer
→ day rows.  Asking for a granularity whose rows retention already removed returns no rows and a note
that says so; when the granularity was picked automatically, the query moves to the finest coarser one
that retention kept and notes that too.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model.tsdb.catalog import UnknownMetric
from model.tsdb.timezone import format_instant, parse_instant

if TYPE_CHECKING:
    from model.tsdb.store import SeriesStore

HOUR_S = 3600
DAY_S = 86_400
# Bounded work for the admin API: a query may return at most this many rows.
MAX_ROWS = 50_000


class Granularity(enum.Enum):
    RAW = "raw"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @classmethod
    def parse(cls, text: str | Granularity | None) -> Granularity | None:
        if text is None or isinstance(text, Granularity):
            return text
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            raise ValueError(
                f"unknown granularity {text!r}; use one of {', '.join(g.value for g in cls)}"
            ) from None


SUMMARIES = (Granularity.MINUTE, Granularity.HOUR, Granularity.DAY)


def granularity_for_span(span_s: float) -> Granularity:
    """Up to 1 hour → minute, up to 31 days → hour, longer → day (both bounds inclusive)."""
    if span_s <= HOUR_S:
        return Granularity.MINUTE
    if span_s <= 31 * DAY_S:
        return Granularity.HOUR
    return Granularity.DAY


@dataclass(frozen=True, slots=True)
class SeriesResult:
    granularity: str
    rows: tuple[tuple[int, float], ...]  # (interval start, UTC epoch seconds; exposed value)
    note: str | None
    metric: str = ""
    entity: str = ""
    kind: str = ""
    start_ts: float = 0.0
    end_ts: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "entity": self.entity,
            "kind": self.kind,
            "granularity": self.granularity,
            "from": format_instant(self.start_ts),
            "to": format_instant(self.end_ts),
            "note": self.note,
            "rows": [
                {"start": format_instant(ts), "start_ts": ts, "value": value} for ts, value in self.rows
            ],
        }


def expected_rows(granularity: Granularity, span_s: float, interval_s: int) -> int:
    step = {
        Granularity.RAW: interval_s,
        Granularity.MINUTE: 60,
        Granularity.HOUR: HOUR_S,
        Granularity.DAY: 23 * HOUR_S,  # the shortest local day
    }[granularity]
    return math.ceil(span_s / step) + 1


def series_response(store: SeriesStore, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """Validate ``GET /series`` query-string parameters and answer ``(HTTP status, JSON body)``.

    ``metric``, ``entity``, ``from`` and ``to`` are required (times as ISO-8601 or epoch seconds),
    ``granularity`` (raw|minute|hour|day) is optional.  Errors are 400 with ``{"error": message}``.
    """
    missing = [name for name in ("metric", "entity", "from", "to") if not params.get(name)]
    if missing:
        return 400, {"error": f"missing query parameter(s): {', '.join(missing)}"}
    try:
        start_ts = parse_instant(params["from"])
        end_ts = parse_instant(params["to"])
        granularity = Granularity.parse(params.get("granularity") or None)
    except ValueError as exc:
        return 400, {"error": str(exc)}
    if end_ts <= start_ts:
        return 400, {"error": "'to' must be later than 'from'"}
    chosen = granularity or granularity_for_span(end_ts - start_ts)
    if expected_rows(chosen, end_ts - start_ts, store.interval_s) > MAX_ROWS:
        return 400, {
            "error": f"{chosen.value} rows for this span exceed {MAX_ROWS}; ask for a coarser granularity"
        }
    try:
        result = store.query(params["metric"], params["entity"], start_ts, end_ts, granularity)
    except UnknownMetric as exc:
        return 404, {"error": str(exc)}
    except ValueError as exc:
        return 400, {"error": str(exc)}
    return 200, result.to_json()


def fmt_days(days: float) -> str:
    return f"{int(days)}" if float(days).is_integer() else f"{days:g}"


def read_rows(
    db: Any,
    granularity: Granularity,
    metric_id: int,
    entity_id: int,
    start_ts: float,
    end_ts: float,
    interval_s: int,
) -> list[tuple[int, float, int, float | None]]:
    """Rows ``(start, sum, count, max)`` whose interval overlaps ``[start_ts, end_ts)``, in time order."""
    if granularity is Granularity.RAW:
        # raw is keyed by start first (appends are cheap); a raw query scans its time range.
        sql = (
            "SELECT start, v_sum, v_count, v_max FROM raw WHERE start > ? AND start < ? "
            "AND metric_id = ? AND entity_id = ? ORDER BY start"
        )
        return db.execute(sql, (start_ts - interval_s, end_ts, metric_id, entity_id)).fetchall()
    if granularity is Granularity.DAY:
        sql = (
            "SELECT start, v_sum, v_count, v_max FROM day WHERE metric_id = ? AND entity_id = ? "
            "AND start > ? AND start < ? AND end > ? ORDER BY start"
        )
        # A day lasts at most 25 hours (DST), which bounds the index range.
        return db.execute(sql, (metric_id, entity_id, start_ts - 25 * HOUR_S, end_ts, start_ts)).fetchall()
    length = 60 if granularity is Granularity.MINUTE else HOUR_S
    sql = (
        f"SELECT start, v_sum, v_count, v_max FROM {granularity.value} WHERE metric_id = ? AND entity_id = ? "
        "AND start > ? AND start < ? ORDER BY start"
    )
    return db.execute(sql, (metric_id, entity_id, start_ts - length, end_ts)).fetchall()
