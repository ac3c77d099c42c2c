"""``ferryman usage daily|monthly|groom``: the usage pipeline from the command line.

Exit codes: 0 done (bad log lines are reported on stderr, not failures), 1 the job could not run (the
message says why, in one line, never a traceback), 2 bad usage.  ``-c FILE`` takes every default from
the proxy configuration's ``usage`` section (and ``global.access_log``); flags override it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

PROG = "ferryman usage"
#: Bad lines printed on stderr (all are counted; the first 1000 are in the day's summary file).
SHOW_BAD_LINES = 20


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    usage = sub.add_parser(
        "usage",
        help="per-client usage reports from the access log (daily, monthly, groom)",
        description="Per-client usage reports from ferryman's access log or nginx/Apache combined logs.",
    )
    usage.set_defaults(func=lambda args: _help(usage))
    leaves = usage.add_subparsers(dest="usage_command", metavar="ACTION")

    def common(p: argparse.ArgumentParser, *, metadata: bool = True) -> None:
        p.add_argument(
            "-c", "--config", help="take defaults from this ferryman configuration's usage section"
        )
        p.add_argument("--out", help="output directory (usage.output_dir)")
        p.add_argument("--time-zone", help="IANA time zone of the days (default UTC)")
        if metadata:
            p.add_argument("--metadata", help="client metadata file (client -> group, resources that exist)")
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    p = leaves.add_parser(
        "daily", help="process one local day of log", description="Process one local day of log."
    )
    p.add_argument("--date", required=True, help="YYYY-MM-DD, 'yesterday' or 'today' (in --time-zone)")
    p.add_argument(
        "--input", action="append", help="log file (plain, .gz, or - for stdin); repeat for several files"
    )
    p.add_argument("--format", choices=("auto", "ferryman", "combined"), default=None, help="default auto")
    p.add_argument("--source", help="name of this log source, part of file names (default ferryman)")
    p.add_argument("--session-timeout-s", type=int, help="default 1800")
    p.add_argument("--double-click-window-s", type=int, help="default 30; 0 counts every repeat")
    p.add_argument(
        "--no-seek",
        action="store_true",
        help="read inputs whole (for files not in time order); by default a day is found by binary search",
    )
    p.add_argument(
        "--progress", action="store_true", help="show a progress bar even when stderr is not a terminal"
    )
    common(p)
    p.set_defaults(func=cmd_daily)

    p = leaves.add_parser(
        "monthly", help="merge a month's daily files into reports", description="Merge a month."
    )
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument(
        "--source", action="append", help="only these sources (repeatable; default every one found)"
    )
    p.add_argument("--top-n", type=int, help="client IPs in each top list (default 100)")
    p.add_argument("--tmp-dir", help="directory for the external sort's runs (default the system's)")
    p.add_argument(
        "--memory-mb", type=int, default=64, help="memory for each sort's in-memory runs (default 64)"
    )
    p.add_argument("--client-files", action="store_true", help="also write YYYY/MM/clients/<client>.json")
    p.add_argument(
        "--progress", action="store_true", help="show a progress bar even when stderr is not a terminal"
    )
    common(p)
    p.set_defaults(func=cmd_monthly)

    p = leaves.add_parser(
        "groom", help="remove daily files past retention", description="Remove old daily files."
    )
    p.add_argument("--retention-days", type=int, help="keep this many days (default 400)")
    p.add_argument("--today", help="YYYY-MM-DD (default: today in --time-zone)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    common(p, metadata=False)
    p.set_defaults(func=cmd_groom)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _options(args: argparse.Namespace) -> Any:
    """UsageOptions from ``-c`` (if given) overridden by flags; raises UsageError."""
    import dataclasses

    from model.usage.errors import UsageError
    from model.usage.options import UsageOptions

    base = UsageOptions()
    if args.config:
        from proxy.conf import ConfigInvalid, load_config

        try:
            config = load_config(args.config)
        except ConfigInvalid as exc:
            raise UsageError(f"invalid configuration {args.config}:\n{exc}") from None
        except OSError as exc:
            raise UsageError(f"cannot read {args.config}: {exc.strerror or exc}") from None
        if config.usage is None:
            raise UsageError(f"{args.config} has no usage section")
        base = UsageOptions.from_config(config)
    changes: dict[str, Any] = {}
    for flag, name in (
        ("out", "output_dir"),
        ("time_zone", "time_zone"),
        ("metadata", "metadata"),
        ("format", "input_format"),
        ("session_timeout_s", "session_timeout_s"),
        ("double_click_window_s", "double_click_window_s"),
        ("retention_days", "retention_days"),
        ("top_n", "top_n"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            changes[name] = value
    source = getattr(args, "source", None)
    if isinstance(source, str):
        changes["source"] = source
    options = dataclasses.replace(base, **changes)
    if args.out is None and not args.config:
        raise UsageError("--out DIR is required (or -c FILE with a usage section)")
    problems = options.problems()
    if problems:
        raise UsageError("; ".join(problems))
    return options


def _local_day(text: str, time_zone: str) -> Any:
    import datetime as dt

    from model.usage.localtime import load_zone, parse_date

    if text in ("today", "yesterday"):
        today = dt.datetime.now(dt.UTC).astimezone(load_zone(time_zone)).date()
        return today if text == "today" else today - dt.timedelta(days=1)
    return parse_date(text)


def _print_json(data: Any) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def _run(job: Any) -> int:
    """Run ``job()`` turning every foreseeable failure into one line on stderr and exit status 1.

    The cyclic garbage collector is off meanwhile: the jobs build millions of small acyclic lists and
    dicts (sessions, counters) that reference counting frees, and every full collection would rescan
    all the live ones (13% of a daily run's CPU on the bench's month).  Only here, in a command's own
    process: the proxy's scheduled runs (``model.usage.schedule``) leave its collector alone.
    """
    import gc

    from model.usage.errors import Cancelled, UsageError
    from model.usage.localtime import BadValue

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return int(job())
    except (UsageError, BadValue, Cancelled) as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return _fail(f"{exc.strerror or exc}{where}")
    finally:
        if was_enabled:
            gc.enable()


def cmd_daily(args: argparse.Namespace) -> int:
    def job() -> int:
        from model.usage.daily import run_daily
        from model.usage.errors import UsageError

        options = _options(args)
        day = _local_day(args.date, options.time_zone)
        inputs = tuple(args.input) if args.input else None
        if inputs is None and not options.input:
            raise UsageError(
                "--input FILE is required (or -c FILE whose usage.input or global.access_log is set)"
            )
        result = run_daily(
            options, day, inputs=inputs, seek=not args.no_seek, progress=True if args.progress else None
        )
        for warning in result.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        if result.bad_lines:
            print(f"{PROG}: {result.bad_lines} bad line(s) skipped:", file=sys.stderr)
            for b in result.bad_samples[:SHOW_BAD_LINES]:
                print(f"  {b.path}:{b.line}: {b.reason}", file=sys.stderr)
            if result.bad_lines > SHOW_BAD_LINES:
                kept = len(result.bad_samples)
                print(
                    f"  ... and {result.bad_lines - SHOW_BAD_LINES} more "
                    f"(the first {kept} are in {result.files[-1]})",
                    file=sys.stderr,
                )
        if args.json:
            _print_json(result.to_json())
        else:
            print(
                f"{result.date}: {result.lines_read:,} lines read, {result.lines_used:,} of the day, "
                f"{result.bad_lines:,} bad; {result.clients:,} clients, {result.requests:,} requests "
                f"({result.suppressed:,} double clicks not counted, {result.denied:,} denied); sessions: "
                f"{result.sessions_restored:,} restored, {result.sessions_started:,} started, "
                f"{result.sessions_ended:,} ended, {result.sessions_carried:,} carried; "
                f"{result.elapsed_s:.2f} s"
            )
            for path in result.files:
                print(f"  {path}")
        return 0

    return _run(job)


def cmd_monthly(args: argparse.Namespace) -> int:
    def job() -> int:
        from model.usage.errors import UsageError
        from model.usage.monthly import run_monthly

        options = _options(args)
        if args.memory_mb < 1:
            raise UsageError("--memory-mb must be at least 1")
        result = run_monthly(
            options,
            args.month,
            sources=tuple(args.source) if args.source else None,
            progress=True if args.progress else None,
            tmp_dir=args.tmp_dir,
            memory_bytes=args.memory_mb * 1024 * 1024,
            client_files=args.client_files,
        )
        if result.missing_days:
            shown = ", ".join(result.missing_days[:5]) + (", ..." if len(result.missing_days) > 5 else "")
            print(
                f"{PROG}: warning: no daily files for {len(result.missing_days)} day(s): {shown}",
                file=sys.stderr,
            )
        if args.json:
            _print_json(result.to_json())
        else:
            print(
                f"{result.month}: {len(result.days)} day(s), {result.clients:,} clients, "
                f"{result.requests:,} requests ({result.denied:,} denied); "
                f"{result.sort_runs} sort run(s); {result.elapsed_s:.2f} s"
            )
            for path in result.files:
                print(f"  {path}")
        return 0

    return _run(job)


def cmd_groom(args: argparse.Namespace) -> int:
    def job() -> int:
        from model.usage.retention import groom

        options = _options(args)
        today = _local_day(args.today or "today", options.time_zone)
        result = groom(options.output_dir, options.retention_days, today, dry_run=args.dry_run)
        if args.json:
            _print_json(
                {
                    "removed_days": list(result.removed_days),
                    "kept_days": result.kept_days,
                    "removed_files": result.removed_files,
                    "dry_run": result.dry_run,
                }
            )
        else:
            verb = "would remove" if result.dry_run else "removed"
            print(
                f"{verb} {len(result.removed_days)} day(s) ({result.removed_files} files); "
                f"kept {result.kept_days} day(s)"
            )
            for day in result.removed_days:
                print(f"  {day}")
        return 0

    return _run(job)
