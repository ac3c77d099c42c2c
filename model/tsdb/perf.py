"""Rough cost of the store: ``python -m model.tsdb.perf [--entities 50] [--hours 24] [--db PATH]``.

Measures (1) how many raw rows per second ``record_snapshot`` sustains, one transaction per snapshot as
the learner writes them, and (2) the cost of rolling up ``--hours`` of 1 s data in one go (the worst
case: a backfill, or a learner that was down); live rollups every minute do 1/60 of an hour each.
Prints one JSON object.  Bounded: the fill uses large transactions, and --hours defaults to 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import tempfile
import time

from model.tsdb.catalog import BUILTIN_METRICS
from model.tsdb.store import SeriesStore

START_TS = 1_709_251_200  # 2024-03-01T00:00:00Z


def _snapshot(metrics: list[str], entities: list[str], tick: int) -> dict[tuple[str, str], float]:
    return {(m, e): (tick + i + j) % 7 for i, m in enumerate(metrics) for j, e in enumerate(entities)}


def run(path: str, *, entities: int, hours: float, snapshot_ticks: int) -> dict[str, object]:
    names = [f"pool/s{i}" for i in range(entities)]
    metrics = [spec.name for spec in BUILTIN_METRICS]
    store = SeriesStore(path, interval_s=1, lateness_s=0)
    # (1) the learner's write path: one snapshot per transaction.
    t0 = time.perf_counter()
    for tick in range(snapshot_ticks):
        store.record_snapshot(START_TS + tick, _snapshot(metrics, names, tick))
    snap_s = time.perf_counter() - t0
    rows_per_snapshot = len(metrics) * len(names)
    # (2) fill the rest of the span quickly (a minute per transaction), then roll it all up.
    total_ticks = int(hours * 3600)
    t0 = time.perf_counter()
    for minute_start in range(snapshot_ticks, total_ticks, 60):
        rows = [
            (START_TS + tick, m, e, v)
            for tick in range(minute_start, min(minute_start + 60, total_ticks))
            for (m, e), v in _snapshot(metrics, names, tick).items()
        ]
        store.record_many(rows)
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    written = store.rollup(START_TS + total_ticks + 3600)
    rollup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = store.query(metrics[2], names[0], START_TS, START_TS + total_ticks, "minute")
    query_s = time.perf_counter() - t0
    store.close()
    raw_rows = rows_per_snapshot * total_ticks
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "entities": entities,
        "metrics": len(metrics),
        "hours": hours,
        "raw_rows": raw_rows,
        "record_snapshot_rows_per_s": round(rows_per_snapshot * snapshot_ticks / snap_s),
        "record_snapshot_ms_per_tick": round(1000 * snap_s / snapshot_ticks, 3),
        "bulk_fill_rows_per_s": round((raw_rows - rows_per_snapshot * snapshot_ticks) / fill_s)
        if fill_s
        else None,
        "rollup_s": round(rollup_s, 2),
        "rollup_raw_rows_per_s": round(raw_rows / rollup_s),
        "rollup_s_per_day_extrapolated": round(rollup_s * 24 / hours, 1),
        "summary_rows_written": written,
        "query_minute_rows": len(result.rows),
        "query_ms": round(1000 * query_s, 2),
        "db_bytes": os.path.getsize(path)
        + (os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m model.tsdb.perf", description=__doc__)
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--snapshot-ticks", type=int, default=600)
    parser.add_argument("--db", default=None, help="database file (default: a temporary one)")
    args = parser.parse_args()
    if args.db:
        print(
            json.dumps(
                run(args.db, entities=args.entities, hours=args.hours, snapshot_ticks=args.snapshot_ticks)
            )
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = run(
            os.path.join(tmp, "perf.db"),
            entities=args.entities,
            hours=args.hours,
            snapshot_ticks=args.snapshot_ticks,
        )
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
