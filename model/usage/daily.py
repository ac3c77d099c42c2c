"""The daily job: one local day of log in, the day's counts and its still-open sessions out.

1. Restore the sessions the previous day left open (``<source>.sessions.gz`` of the day before; none on
   the first day of a month, since the last day of a month carries none).
2. Read every input in blocks; each line whose time falls in the local day goes to the sessionizer.
   Unreadable lines are counted, with their line numbers, never fatal.  With a single input in time
   order, sessions idle past their timeout are ended once per timeout of log time, which bounds the
   sessions held in memory (otherwise they wait for the end of the day).
3. End the sessions that ended by midnight; carry the others (unless it is the last day of the month).
4. Write ``stats``, ``ips``, ``sessions`` and ``summary`` (layout and formats in ``files``).

Nothing written depends on the wall clock, the order of dicts or the machine, so a re-run over the same
input gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Protocol

import orjson

from model.usage import files, reader
from model.usage.errors import Cancelled, UsageError
from model.usage.localtime import (
    US_PER_S,
    BadValue,
    day_bounds_us,
    is_last_day_of_month,
    load_zone,
)
from model.usage.metadata import Metadata, MetadataError, load_metadata
from model.usage.options import UsageOptions
from model.usage.parse import SCANNERS, Format
from model.usage.progress import make_progress
from model.usage.reader import Input, count_newlines, open_input, seek_to, sniff_format
from model.usage.sessionize import OpenSession, Sessionizer

#: Bad lines kept with their line numbers in the result and the summary file (all are counted).
MAX_BAD_KEPT = 1000


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class BadLineReport:
    path: str
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class InputReport:
    path: str
    format: str
    start_offset: int
    lines: int
    used: int
    other_days: int
    bad: int


@dataclass(frozen=True, slots=True)
class DailyResult:
    date: dt.date
    source: str
    files: tuple[str, ...]
    inputs: tuple[InputReport, ...]
    lines_read: int
    lines_used: int
    lines_other_days: int
    bad_lines: int
    bad_samples: tuple[BadLineReport, ...]
    sessions_restored: int
    sessions_started: int
    sessions_ended: int
    sessions_carried: int
    clients: int
    ips: int
    requests: int
    suppressed: int
    denied: int
    warnings: tuple[str, ...] = ()
    elapsed_s: float = field(default=0.0, compare=False)
    cpu_s: float = field(default=0.0, compare=False)  # this thread's CPU time

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["date"] = self.date.isoformat()
        return out


def _restore(sz: Sessionizer, path: pathlib.Path) -> None:
    try:
        lines = list(files.read_gz_lines(path))
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"cannot read carried sessions {path}: {exc}; re-run the previous day") from None
    try:
        sz.restore(files.parse_session_line(line) for line in lines)
    except files.BadSessionLine as exc:
        raise UsageError(f"{path}: {exc}; re-run the previous day") from None


def run_daily(
    options: UsageOptions,
    date: dt.date,
    *,
    inputs: tuple[str, ...] | None = None,
    seek: bool = True,
    progress: bool | None = False,
    cancel: CancelFlag | None = None,
) -> DailyResult:
    """Process local day ``date`` of ``inputs`` (default: ``options.input``) into
    ``options.output_dir``.  Raises UsageError for what the operator must fix, Cancelled when
    ``cancel`` is set; bad log lines are reported in the result."""
    started = time.monotonic()
    cpu_started = time.thread_time()
    problems = options.problems()
    if problems:
        raise UsageError("; ".join(problems))
    paths = inputs if inputs is not None else ((options.input,) if options.input else ())
    if not paths:
        raise UsageError("no input: give --input FILE (or set usage.input / global.access_log)")
    try:
        zone = load_zone(options.time_zone)
    except BadValue as exc:
        raise UsageError(str(exc)) from None
    try:
        metadata = load_metadata(options.metadata)
    except MetadataError as exc:
        raise UsageError(str(exc)) from None
    forced = None if options.input_format == "auto" else Format(options.input_format)
    out = pathlib.Path(options.output_dir)
    start_us, end_us = day_bounds_us(date, zone)
    timeout_us = options.session_timeout_s * US_PER_S
    warnings: list[str] = []

    sz = Sessionizer(options.session_timeout_s, options.double_click_window_s)
    if date.day != 1:
        prev = files.sessions_path(out, date - dt.timedelta(days=1), options.source)
        if prev.exists():
            _restore(sz, prev)
        else:
            warnings.append(
                f"no sessions carried from {date - dt.timedelta(days=1)} ({prev} is missing): "
                "sessions open at midnight are counted as new"
            )

    # Sessions idle past their timeout are ended as the log's time advances, which bounds memory.  Only
    # for one input in time order: several inputs may overlap in time (two proxies, a rotated file given
    # twice), and ``seek=False`` says the file is not in time order; then a later line could still
    # belong to a session that seemed finished, so sessions wait for the end of the day.
    expire_as_we_go = seek and len(paths) == 1
    opened: list[Input] = []
    try:
        for p in paths:
            opened.append(open_input(p))
        total_bytes = sum(i.size for i in opened)
        bar = make_progress(f"usage daily {date}", total_bytes, progress)
        reports: list[InputReport] = []
        bad_samples: list[BadLineReport] = []
        bad_total = 0
        lines_total = 0
        done_bytes = 0
        last_expiry = start_us
        for inp in opened:
            fmt = forced or sniff_format(inp)
            if fmt is None:
                reports.append(InputReport(inp.path, "empty", 0, 0, 0, 0, 0))
                done_bytes += inp.size
                continue
            inp.fmt = fmt
            if seek:
                inp.start_offset = seek_to(inp, fmt, start_us)
            stop_at = end_us + reader.SEEK_SLACK_S * US_PER_S if seek and inp.seekable else None
            scan = SCANNERS[fmt]
            cache: dict[str, int] = {}
            n_lines = n_used = n_other = 0
            first_bad = len(bad_samples)
            bad = _BadLines(inp.path, bad_samples)
            for block in inp.blocks():
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"daily {date} cancelled")
                bad.lines_before = n_lines
                used, other, latest = scan(block, start_us, end_us, sz.add, bad, cache)
                n_lines += len(block)
                n_used += used
                n_other += other
                now = min(latest, end_us)
                if expire_as_we_go and now - last_expiry >= timeout_us:
                    sz.expire(now)
                    last_expiry = now
                bar.update(done_bytes + inp.position(), lines_total + n_lines)  # skipped bytes count as done
                if stop_at is not None and latest >= stop_at:
                    break
            n_bad = bad.count
            if inp.start_offset and n_bad:
                # Line numbers so far count from where reading started; make them absolute.
                before = count_newlines(inp.path, inp.start_offset)
                for k in range(first_bad, len(bad_samples)):
                    b = bad_samples[k]
                    bad_samples[k] = BadLineReport(b.path, b.line + before, b.reason)
            done_bytes += inp.size
            lines_total += n_lines
            bad_total += n_bad
            reports.append(
                InputReport(inp.path, fmt.value, inp.start_offset, n_lines, n_used, n_other, n_bad)
            )
        bar.close()
    finally:
        for inp in opened:
            inp.close()

    carry = not is_last_day_of_month(date)
    carried = sz.finish(end_us, carry=carry)
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"daily {date} cancelled")
    written = _write_day(out, date, options.source, sz, carried, metadata)

    requests = suppressed = denied = 0
    for per in sz.clients.values():
        for c in per.values():
            requests += c[0]
            suppressed += c[1]
            denied += c[2]
    result = DailyResult(
        date=date,
        source=options.source,
        files=(),
        inputs=tuple(reports),
        lines_read=lines_total,
        lines_used=sum(r.used for r in reports),
        lines_other_days=sum(r.other_days for r in reports),
        bad_lines=bad_total,
        bad_samples=tuple(bad_samples),
        sessions_restored=sz.restored,
        sessions_started=sz.started,
        sessions_ended=sz.ended,
        sessions_carried=len(carried),
        clients=len(sz.clients),
        ips=len(sz.ips),
        requests=requests,
        suppressed=suppressed,
        denied=denied,
        warnings=tuple(warnings),
    )
    summary = files.summary_path(out, date, options.source)
    summary_doc = {
        **result.to_json(),
        "files": [str(p) for p in written],
        "settings": {
            "time_zone": options.time_zone,
            "session_timeout_s": options.session_timeout_s,
            "double_click_window_s": options.double_click_window_s,
            "metadata": options.metadata,
            "carried": carry,
        },
    }
    del summary_doc["elapsed_s"], summary_doc["cpu_s"]  # a summary must not change between re-runs
    files.write_bytes(
        summary, orjson.dumps(summary_doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )
    return dataclasses.replace(
        result,
        files=(*(str(p) for p in written), str(summary)),
        elapsed_s=time.monotonic() - started,
        cpu_s=time.thread_time() - cpu_started,
    )


class _BadLines:
    """The scanners' ``bad`` callback for one input: counts every bad line, keeps the first ones."""

    __slots__ = ("count", "keep", "lines_before", "path")

    def __init__(self, path: str, keep: list[BadLineReport]) -> None:
        self.path = path
        self.keep = keep
        self.count = 0
        self.lines_before = 0

    def __call__(self, index: int, reason: str) -> None:
        self.count += 1
        if len(self.keep) < MAX_BAD_KEPT:
            self.keep.append(BadLineReport(self.path, self.lines_before + index + 1, reason))


def _write_day(
    out: pathlib.Path,
    date: dt.date,
    source: str,
    sz: Sessionizer,
    carried: list[OpenSession],
    metadata: Metadata,
) -> list[pathlib.Path]:
    stats_lines = files.stats_lines(sz.clients, metadata)
    # Byte order, never a locale's: the month-end merge relies on exactly this order.
    files.sort_lines(stats_lines)
    ip_lines = [files.ip_line(ip, c[0], c[1]) for ip, c in sz.ips.items()]
    files.sort_lines(ip_lines)
    paths = [
        files.stats_path(out, date, source),
        files.ips_path(out, date, source),
        files.sessions_path(out, date, source),
    ]
    with files.GzipLines(paths[0]) as w:
        w.write_text(stats_lines)
    with files.GzipLines(paths[1]) as w:
        w.write_text(ip_lines)
    with files.GzipLines(paths[2]) as w:
        w.writelines(files.session_line(o) for o in carried)
    return paths
