"""The month-end job: merge the month's daily files in client order, in memory bounded by one client.

1. Every ``group|client|resource|counts`` line of every day is re-keyed to ``client|resource|counts``
   (the group is decided again below, from the metadata as it is now) and fed to an external merge
   sort (``extsort``): sorted runs of bounded size on disk, merged with a heap.  Byte order only, and
   by the key itself: for the sort the separators become tabs, which sort below every byte an escaped
   name can hold (``files.escape``), so ``10.0.0.11`` comes before ``10.0.0.110`` as in the key's own
   byte order (with ``|``, a byte above the digits, whole lines would sort the other way round).
2. The merged stream brings each client's lines together; they are summed per resource, the client is
   given its current group (``unknown`` if it no longer exists, and per resource if the resource no
   longer exists), written to the report and forgotten.
3. The ``ips`` files go through the same sort; each IP's month totals are offered to two heaps of
   ``top_n`` (requests, denied requests), so the top lists cost ``O(top_n)`` memory.

The last day of a month carries no sessions, so the daily files of a month hold all its requests:
the month's totals equal processing the whole month's log in one pass.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from model.usage import files
from model.usage.daily import CancelFlag
from model.usage.errors import Cancelled, UsageError
from model.usage.extsort import DEFAULT_MEMORY_BYTES, ExternalSort
from model.usage.localtime import BadValue, month_days, parse_month
from model.usage.metadata import Metadata, MetadataError, load_metadata
from model.usage.options import UsageOptions
from model.usage.progress import make_progress
from model.usage.report import ClientReport, ReportWriter, top_push, top_sorted

#: Check the cancel flag and redraw progress every this many lines.
CHECK_EVERY_LINES = 65536


@dataclass(frozen=True, slots=True)
class MonthlyResult:
    month: str
    sources: tuple[str, ...]
    days: tuple[str, ...]
    missing_days: tuple[str, ...]
    clients: int
    requests: int
    suppressed: int
    denied: int
    groups: dict[str, dict[str, int]]
    top_requests: tuple[tuple[str, int], ...]
    top_denied: tuple[tuple[str, int], ...]
    stats_lines: int
    ip_lines: int
    sort_runs: int
    files: tuple[str, ...]
    elapsed_s: float = field(default=0.0, compare=False)
    cpu_s: float = field(default=0.0, compare=False)  # this thread's CPU time

    def to_json(self) -> dict[str, object]:
        return {
            "month": self.month,
            "sources": list(self.sources),
            "days": list(self.days),
            "missing_days": list(self.missing_days),
            "clients": self.clients,
            "requests": self.requests,
            "suppressed": self.suppressed,
            "denied": self.denied,
            "groups": self.groups,
            "top_requests": [list(t) for t in self.top_requests],
            "top_denied": [list(t) for t in self.top_denied],
            "stats_lines": self.stats_lines,
            "ip_lines": self.ip_lines,
            "sort_runs": self.sort_runs,
            "files": list(self.files),
            "elapsed_s": self.elapsed_s,
            "cpu_s": self.cpu_s,
        }


def find_daily_files(
    out: pathlib.Path, year: int, month: int, sources: tuple[str, ...] | None
) -> tuple[tuple[str, ...], list[tuple[dt.date, str]], list[dt.date]]:
    """(sources, [(day, source) with a stats file], days without any) for the month."""
    found: list[tuple[dt.date, str]] = []
    missing: list[dt.date] = []
    seen: set[str] = set()
    suffix = ".stats.gz"
    for day in month_days(year, month):
        d = files.day_dir(out, day)
        if sources is not None:
            names = [s for s in sources if files.stats_path(out, day, s).is_file()]
        else:
            try:
                names = sorted(p.name[: -len(suffix)] for p in d.iterdir() if p.name.endswith(suffix))
            except OSError:
                names = []
        if (sources is not None and len(names) < len(sources)) or not names:
            missing.append(day)
        for name in names:
            found.append((day, name))
            seen.add(name)
    return (sources if sources is not None else tuple(sorted(seen))), found, missing


def _corrupt(path: pathlib.Path, line_no: int, why: str) -> UsageError:
    return UsageError(f"{path}:{line_no}: {why}; re-run that day")


def run_monthly(
    options: UsageOptions,
    month: str,
    *,
    sources: tuple[str, ...] | None = None,
    progress: bool | None = False,
    cancel: CancelFlag | None = None,
    tmp_dir: str | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    client_files: bool = False,
) -> MonthlyResult:
    """Merge month ``YYYY-MM`` of ``options.output_dir`` (every source found, or ``sources``) into
    ``YYYY/MM/report.{json,csv,html}``.  Raises UsageError for what the operator must fix."""
    started = time.monotonic()
    cpu_started = time.thread_time()
    try:
        year, mon = parse_month(month)
    except BadValue as exc:
        raise UsageError(str(exc)) from None
    problems = options.problems()
    if problems:
        raise UsageError("; ".join(problems))
    for s in sources or ():
        if not files.valid_source(s):
            raise UsageError(f"source {s!r} must be letters, digits, '.', '_' or '-' (a file name)")
    try:
        metadata = load_metadata(options.metadata)
    except MetadataError as exc:
        raise UsageError(str(exc)) from None
    out = pathlib.Path(options.output_dir)
    names, found, missing = find_daily_files(out, year, mon, sources)
    if not found:
        raise UsageError(f"no daily files for {month} under {out} (run 'ferryman usage daily' first)")
    month_text = f"{year:04d}-{mon:02d}"
    days = sorted({day.isoformat() for day, _ in found})
    total_bytes = sum(files.stats_path(out, d, s).stat().st_size for d, s in found)

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"monthly {month_text} cancelled")

    with (
        ExternalSort(tmp_dir, memory_bytes=memory_bytes) as stats_sort,
        ExternalSort(tmp_dir, memory_bytes=memory_bytes) as ip_sort,
    ):
        bar = make_progress(f"usage monthly {month_text} read", total_bytes, progress)
        done = 0
        for day, source in found:
            path = files.stats_path(out, day, source)
            for n, line in enumerate(_gz_lines(path), 1):
                cut = line.find(b"|")
                if cut < 0 or not line.endswith(b"\n"):
                    raise _corrupt(path, n, "not a stats line")
                stats_sort.add(line[cut + 1 :].replace(b"|", b"\t"))
                if n % CHECK_EVERY_LINES == 0:
                    check()
            ips = files.ips_path(out, day, source)
            if ips.is_file():
                ip_sort.extend(x.replace(b"|", b"\t") for x in _gz_lines(ips))
            done += path.stat().st_size
            bar.update(done, stats_sort.lines)
            check()
        bar.close()

        writer = ReportWriter(
            files.month_dir(out, year, mon),
            month=month_text,
            sources=names,
            days=days,
            missing_days=[d.isoformat() for d in missing],
            client_files=client_files,
        )
        bar = make_progress(f"usage monthly {month_text} merge", stats_sort.lines, progress)
        with writer:
            consumed = [0]
            for report in _clients(stats_sort.sorted(), metadata, consumed):
                writer.client(report)
                if writer.clients % 1024 == 0:
                    bar.update(consumed[0], consumed[0])
                    check()
            bar.update(consumed[0], consumed[0])
            bar.close()
            top_requests, top_denied = _top_ips(ip_sort.sorted(), options.top_n)
            written = writer.finish(top_requests, top_denied)
        runs = stats_sort.runs_written + ip_sort.runs_written
        stats_lines, ip_lines = stats_sort.lines, ip_sort.lines

    return MonthlyResult(
        month=month_text,
        sources=tuple(names),
        days=tuple(days),
        missing_days=tuple(d.isoformat() for d in missing),
        clients=writer.clients,
        requests=writer.totals.total,
        suppressed=writer.totals.suppressed,
        denied=writer.totals.denied,
        groups={name: g.to_json() for name, g in sorted(writer.groups.items())},
        top_requests=tuple(top_requests),
        top_denied=tuple(top_denied),
        stats_lines=stats_lines,
        ip_lines=ip_lines,
        sort_runs=runs,
        files=tuple(str(p) for p in written),
        elapsed_s=time.monotonic() - started,
        cpu_s=time.thread_time() - cpu_started,
    )


def _gz_lines(path: pathlib.Path) -> Iterator[bytes]:
    try:
        yield from files.read_gz_lines(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"cannot read {path}: {exc}; re-run that day") from None


def _parse_counts(fields: list[bytes]) -> list[int]:
    try:
        counts = [int(f) for f in fields]
    except ValueError:
        raise UsageError(
            f"corrupt stats line (counts {b'|'.join(fields).decode(errors='replace')}); re-run that day"
        ) from None
    if len(counts) != len(files.STATS_FIELDS):
        raise UsageError(f"corrupt stats line ({len(counts)} counts); re-run that day")
    return counts


def _clients(lines: Iterator[bytes], metadata: Metadata, consumed: list[int]) -> Iterator[ClientReport]:
    """Sorted ``client\tresource\tcounts`` lines -> one ClientReport per client, in order
    (``consumed[0]`` counts the lines read so far, for the progress bar)."""
    current: bytes | None = None
    per: dict[bytes, list[int]] = {}
    for n, line in enumerate(lines, 1):
        consumed[0] = n
        fields = line.rstrip(b"\n").split(b"\t")
        if len(fields) != 2 + len(files.STATS_FIELDS):
            raise UsageError(f"corrupt stats line {line[:80]!r}; re-run that day")
        client = fields[0]
        if client != current:
            if current is not None:
                yield _client_report(current, per, metadata)
            current = client
            per = {}
        counts = _parse_counts(fields[2:])
        c = per.get(fields[1])
        if c is None:
            per[fields[1]] = counts
        else:
            for i, v in enumerate(counts):
                c[i] += v
    if current is not None:
        yield _client_report(current, per, metadata)


def _client_report(client_b: bytes, per: dict[bytes, list[int]], metadata: Metadata) -> ClientReport:
    client = files.unescape(client_b.decode("utf-8"))
    group = metadata.client_group(client)
    known: dict[str, list[int]] = {}
    unknown: dict[str, list[int]] = {}
    for res_b, c in per.items():
        resource = files.unescape(res_b.decode("utf-8"))
        if metadata.group(client, resource) == group:
            known[resource] = c
        else:
            unknown[resource] = c
    return ClientReport(client=client, group=group, resources=known, unknown=unknown)


def _top_ips(lines: Iterator[bytes], size: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Sorted ``ip\trequests\tdenied`` lines -> the ``size`` IPs with most requests and most denied."""
    by_requests: list[tuple[int, int, str]] = []
    by_denied: list[tuple[int, int, str]] = []
    current: bytes | None = None
    requests = denied = order = 0

    def offer() -> None:
        ip = files.unescape(current.decode("utf-8")) if current is not None else ""
        top_push(by_requests, size, requests, order, ip)
        if denied > 0:
            top_push(by_denied, size, denied, order, ip)

    for line in lines:
        fields = line.rstrip(b"\n").split(b"\t")
        if len(fields) != 3:
            raise UsageError(f"corrupt ips line {line[:80]!r}; re-run that day")
        if fields[0] != current:
            if current is not None:
                offer()
            current = fields[0]
            order += 1
            requests = denied = 0
        try:
            requests += int(fields[1])
            denied += int(fields[2])
        except ValueError:
            raise UsageError(f"corrupt ips line {line[:80]!r}; re-run that day") from None
    if current is not None:
        offer()
    return top_sorted(by_requests), top_sorted(by_denied)
