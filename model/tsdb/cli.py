"""``ferryman metrics ...``: query, backfill, roll up and groom a metrics database.

Exit codes: 0 done, 1 failed (or, for ``ingest``, some lines were skipped), 2 bad usage.  Bad input is
reported in one line on stderr, never as a traceback.  ``--now`` (ISO-8601 or epoch seconds) replaces
the wall clock, so runs are reproducible; without it the clock is read here and only here.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from typing import Any

PROG = "ferryman metrics"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    metrics = sub.add_parser("metrics", help="query, backfill, roll up and groom the metrics store")
    metrics.set_defaults(func=lambda args: _usage(metrics))
    leaves = metrics.add_subparsers(dest="metrics_command", metavar="ACTION")

    def common(p: argparse.ArgumentParser, *, now: bool = True) -> None:
        p.add_argument("--db", required=True, help="metrics database (SQLite file)")
        p.add_argument(
            "--interval-s", type=int, default=None, help="collection interval of a new database (default 1)"
        )
        p.add_argument(
            "--time-zone", default=None, help="IANA time zone of day rows for a new database (default UTC)"
        )
        if now:
            p.add_argument("--now", default=None, help="the current time, ISO-8601 or epoch seconds")
            p.add_argument(
                "--lateness-s",
                type=float,
                default=5.0,
                help="wait this long after an interval ends (default 5)",
            )

    p = leaves.add_parser("query", help="print one series")
    common(p, now=False)
    p.add_argument("--metric", required=True)
    p.add_argument("--entity", required=True)
    p.add_argument("--from", dest="start", required=True, help="ISO-8601 or epoch seconds")
    p.add_argument("--to", dest="end", required=True, help="ISO-8601 or epoch seconds")
    p.add_argument("--granularity", choices=("raw", "minute", "hour", "day"), default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_query)

    p = leaves.add_parser(
        "ingest", help="backfill events and session records from a JSONL file, then roll up"
    )
    p.add_argument("file", help="JSON Lines file")
    common(p)
    p.set_defaults(func=cmd_ingest)

    p = leaves.add_parser("rollup", help="summarise complete intervals")
    common(p)
    p.set_defaults(func=cmd_rollup)

    p = leaves.add_parser("groom", help="delete rows past retention")
    common(p)
    for name, default in (("raw", 7), ("minute", 3), ("hour", 32), ("day", 90), ("session", 90)):
        p.add_argument(f"--{name}-days", type=float, default=default, help=f"default {default}")
    p.set_defaults(func=cmd_groom)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


class _Failed(Exception):
    pass


def _now(args: argparse.Namespace) -> float:
    from model.tsdb.timezone import parse_instant

    if args.now is None:
        return time.time()
    try:
        return parse_instant(args.now)
    except ValueError as exc:
        raise _Failed(f"--now: {exc}") from None


def _open(args: argparse.Namespace, *, create: bool, **extra: Any) -> Any:
    from model.tsdb.store import SeriesStore, read_settings

    path = args.db
    settings = read_settings(path)
    if settings is None and not create:
        raise _Failed(f"no metrics database at {path}")
    interval_s = args.interval_s if args.interval_s is not None else (settings[0] if settings else 1)
    time_zone = args.time_zone if args.time_zone is not None else (settings[1] if settings else "UTC")
    if create:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise _Failed(f"directory {parent} does not exist")
    return SeriesStore(path, interval_s=interval_s, time_zone=time_zone, **extra)


def _run(func: Any, args: argparse.Namespace) -> int:
    try:
        return int(func(args))
    except _Failed as exc:
        return _fail(str(exc))
    except ValueError as exc:  # settings mismatch, unknown metric or zone, bad times
        return _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        return _fail(f"{args.db}: {exc}")
    except OSError as exc:
        return _fail(f"{exc.filename or args.db}: {exc.strerror or exc}")


def cmd_query(args: argparse.Namespace) -> int:
    return _run(_query, args)


def _query(args: argparse.Namespace) -> int:
    from model.tsdb.timezone import format_instant, parse_instant

    try:
        start_ts = parse_instant(args.start)
        end_ts = parse_instant(args.end)
    except ValueError as exc:
        raise _Failed(f"--from/--to: {exc}") from None
    if end_ts <= start_ts:
        raise _Failed("--to must be later than --from")
    store = _open(args, create=False)
    try:
        result = store.query(args.metric, args.entity, start_ts, end_ts, args.granularity)
    finally:
        store.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"# {result.metric} {result.entity} ({result.kind}, {result.granularity} rows)")
    for ts, value in result.rows:
        print(f"{format_instant(ts)}  {_fmt(value)}")
    if result.note:
        print(f"# note: {result.note}")
    return 0


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else f"{value:.12g}"


def cmd_ingest(args: argparse.Namespace) -> int:
    return _run(_ingest, args)


def _ingest(args: argparse.Namespace) -> int:
    from model.tsdb.ingest import ingest_file

    now_ts = _now(args)
    if not os.path.isfile(args.file):
        raise _Failed(f"{args.file}: no such file")
    store = _open(args, create=True, lateness_s=args.lateness_s)
    try:
        report = ingest_file(store, args.file)
        written = store.rollup(now_ts)
    finally:
        store.close()
    for err in report.errors:
        print(f"{args.file}:{err.line}: {err.message}", file=sys.stderr)
    if report.bad_lines > len(report.errors):
        print(f"{args.file}: ... and {report.bad_lines - len(report.errors)} more bad lines", file=sys.stderr)
    late = (
        f", {report.late_events} too late (their minutes were already summarised)"
        if report.late_events
        else ""
    )
    print(
        f"{args.file}: {report.events} events{late}, {report.sessions} session records, "
        f"{report.bad_lines} bad lines skipped; rollup wrote {written} rows"
    )
    return 1 if report.bad_lines else 0


def cmd_rollup(args: argparse.Namespace) -> int:
    return _run(_rollup, args)


def _rollup(args: argparse.Namespace) -> int:
    now_ts = _now(args)
    store = _open(args, create=False, lateness_s=args.lateness_s)
    try:
        written = store.rollup(now_ts)
    finally:
        store.close()
    print(f"rollup wrote {written} rows")
    return 0


def cmd_groom(args: argparse.Namespace) -> int:
    return _run(_groom, args)


def _groom(args: argparse.Namespace) -> int:
    from model.tsdb.groom import Retention

    now_ts = _now(args)
    retention = Retention(
        raw_days=args.raw_days,
        minute_days=args.minute_days,
        hour_days=args.hour_days,
        day_days=args.day_days,
        session_days=args.session_days,
    )
    store = _open(args, create=False, lateness_s=args.lateness_s, retention=retention)
    try:
        deleted = store.groom(now_ts)
    finally:
        store.close()
    print(f"groom deleted {deleted} rows")
    return 0
