"""The month's report as JSON, CSV and an HTML page, written while the clients stream past.

Clients arrive one at a time in byte order of their (escaped) id; each is written at once to
``report.json`` and ``report.csv`` and forgotten, so memory holds one client, the per-group totals
and a few bounded heaps, whatever the number of clients.

``report.json``::

    {"month": "2026-11", "sources": [...], "days": [...], "missing_days": [...],
     "clients": {"alice": {"group": "gold", "total": 12, "suppressed": 3, "denied": 1,
                           "bytes_in": 640, "bytes_out": 1280,
                           "resources": {"login": 2, "play": 10},
                           "unknown": {"old-op": 4}},      # only when some resources no longer exist
                 ...},
     "groups": {"gold": {"clients": 1, "total": 12, ...}, "unknown": {...}},
     "totals": {"clients": ..., "total": ..., ...},
     "top_requests": [{"ip": "10.0.0.7", "requests": 123}, ...],
     "top_denied": [{"ip": "10.0.0.9", "denied": 45}, ...]}

``total`` counts every request of the client (double clicks excluded), including those on resources
that no longer exist; ``resources`` and ``unknown`` split it.  ``report.csv`` has one row per
group, client and resource.  The HTML page has the group totals, a bar chart per group of its
biggest clients, and the top client IPs.  No file holds the time it was made, so a re-run is
byte-identical.
"""

from __future__ import annotations

import csv
import heapq
import html
import io
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

import orjson

from model.usage import files
from model.usage.metadata import UNKNOWN_GROUP

COUNT_FIELDS = files.STATS_FIELDS
CSV_HEADER = ("group", "client", "resource", *COUNT_FIELDS)
#: Clients shown in each group's chart.
CHART_CLIENTS = 20


@dataclass(slots=True)
class GroupTotals:
    clients: int = 0
    total: int = 0
    suppressed: int = 0
    denied: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    # (requests, -order, client): the group's biggest clients, smallest first (a bounded min-heap).
    top: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, counts: Sequence[int]) -> None:
        self.total += counts[0]
        self.suppressed += counts[1]
        self.denied += counts[2]
        self.bytes_in += counts[3]
        self.bytes_out += counts[4]

    def to_json(self) -> dict[str, int]:
        return {
            "clients": self.clients,
            "total": self.total,
            "suppressed": self.suppressed,
            "denied": self.denied,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


@dataclass(frozen=True, slots=True)
class ClientReport:
    """One client's month: its group and, per resource, the six counters (``COUNT_FIELDS``)."""

    client: str
    group: str
    resources: dict[str, list[int]]  # resource -> counters, resources that exist
    unknown: dict[str, list[int]]  # resource -> counters, resources that no longer exist

    def totals(self) -> list[int]:
        out = [0] * len(COUNT_FIELDS)
        for per in (self.resources, self.unknown):
            for c in per.values():
                for i, v in enumerate(c):
                    out[i] += v
        return out


def top_push(heap: list[tuple[int, int, str]], size: int, value: int, order: int, name: str) -> None:
    """Keep the ``size`` largest ``value``s in a min-heap; ties go to the name seen first.

    Names come in ascending byte order, so among equal values the later one is the larger name and
    the one to drop: its ``-order`` is the smallest, which makes it the heap's minimum.
    """
    item = (value, -order, name)
    if len(heap) < size:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def top_sorted(heap: list[tuple[int, int, str]]) -> list[tuple[str, int]]:
    """Largest first; equal values in ascending name order."""
    return [(name, value) for value, _neg, name in sorted(heap, reverse=True)]


class ReportWriter:
    """Streams ``report.json`` and ``report.csv``; ``finish`` adds the tops and writes the page."""

    def __init__(
        self,
        month_dir: pathlib.Path,
        *,
        month: str,
        sources: Sequence[str],
        days: Sequence[str],
        missing_days: Sequence[str],
        client_files: bool = False,
    ) -> None:
        self.dir = month_dir
        self.month = month
        self.sources = list(sources)
        self.days = list(days)
        self.missing_days = list(missing_days)
        self.groups: dict[str, GroupTotals] = {}
        self.totals = GroupTotals()
        self.clients = 0
        self.client_files = client_files
        self._json = files.AtomicFile(month_dir / "report.json")
        self._csv = files.AtomicFile(month_dir / "report.csv")
        self._jf: IO[bytes] | None = None
        self._cf: IO[bytes] | None = None
        self._csv_buf = io.StringIO()
        self._csv_writer = csv.writer(self._csv_buf, lineterminator="\n")

    def __enter__(self) -> ReportWriter:
        if self.client_files:
            # A re-run must not leave the files of clients that are no longer in the month.
            for old in (self.dir / "clients").glob("*.json"):
                old.unlink()
        self._jf = self._json.__enter__()
        self._cf = self._csv.__enter__()
        head = {
            "month": self.month,
            "sources": self.sources,
            "days": self.days,
            "missing_days": self.missing_days,
        }
        self._jf.write(orjson.dumps(head)[:-1] + b',\n"clients":{')
        self._csv_writer.writerow(CSV_HEADER)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._json.__exit__(exc_type, exc, tb)
            self._csv.__exit__(exc_type, exc, tb)

    def _group(self, name: str) -> GroupTotals:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = GroupTotals()
        return g

    def client(self, report: ClientReport) -> None:
        assert self._jf is not None and self._cf is not None
        totals = report.totals()
        entry: dict[str, object] = {
            "group": report.group,
            "total": totals[0],
            "suppressed": totals[1],
            "denied": totals[2],
            "bytes_in": totals[3],
            "bytes_out": totals[4],
            "resources": {res: c[0] for res, c in sorted(report.resources.items())},
        }
        if report.unknown:
            entry["unknown"] = {res: c[0] for res, c in sorted(report.unknown.items())}
        sep = b"\n" if self.clients == 0 else b",\n"
        self._jf.write(sep + orjson.dumps(report.client) + b":" + orjson.dumps(entry))
        if self.client_files:
            doc = {"month": self.month, "client": report.client, **entry}
            name = files.client_file_name(report.client)
            files.write_bytes(
                self.dir / "clients" / name, orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
            )
        self.clients += 1
        self.totals.clients += 1
        self.totals.add(totals)
        # Per group: the client's own group for the resources that exist, "unknown" for the rest.
        rows: list[tuple[str, str, list[int]]] = [(report.group, r, c) for r, c in report.resources.items()]
        rows += [(UNKNOWN_GROUP, r, c) for r, c in report.unknown.items()]
        rows.sort(key=lambda row: row[1])
        counted: set[str] = set()
        per_group: dict[str, int] = {}
        for group, resource, c in rows:
            g = self._group(group)
            g.add(c)
            if group not in counted:
                counted.add(group)
                g.clients += 1
            per_group[group] = per_group.get(group, 0) + c[0]
            self._csv_writer.writerow((group, report.client, resource, *c))
        for group, requests in per_group.items():
            top_push(self._group(group).top, CHART_CLIENTS, requests, self.clients, report.client)
        self._cf.write(self._csv_buf.getvalue().encode("utf-8"))
        self._csv_buf.seek(0)
        self._csv_buf.truncate()

    def finish(
        self, top_requests: list[tuple[str, int]], top_denied: list[tuple[str, int]]
    ) -> list[pathlib.Path]:
        assert self._jf is not None and self._cf is not None
        groups = {name: self.groups[name].to_json() for name in sorted(self.groups)}
        tail = {
            "groups": groups,
            "totals": self.totals.to_json(),
            "top_requests": [{"ip": ip, "requests": n} for ip, n in top_requests],
            "top_denied": [{"ip": ip, "denied": n} for ip, n in top_denied],
        }
        self._jf.write(b"\n}," + orjson.dumps(tail)[1:] + b"\n")
        self._json.__exit__(None, None, None)
        self._csv.__exit__(None, None, None)
        page = self.dir / "report.html"
        files.write_bytes(page, render_html(self, top_requests, top_denied).encode("utf-8"))
        return [self._json.path, self._csv.path, page]


# -- the page ---------------------------------------------------------------------------------------

_BAR_W = 420
_ROW_H = 18
_LABEL_W = 180

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
h2{margin-top:1.5em}
svg text{font:12px system-ui,sans-serif}
"""


def _chart(top: list[tuple[str, int]]) -> str:
    """A horizontal bar chart (inline SVG, no script) of clients and their requests."""
    if not top:
        return "<p>No requests.</p>"
    biggest = max(n for _, n in top) or 1
    height = _ROW_H * len(top) + 4
    rows = []
    for i, (client, n) in enumerate(top):
        y = i * _ROW_H + 2
        w = round(_BAR_W * n / biggest)
        label = html.escape(client if len(client) <= 28 else client[:27] + "\u2026")
        rows.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 13}" text-anchor="end">{label}</text>'
            f'<rect x="{_LABEL_W}" y="{y}" width="{w}" height="{_ROW_H - 4}" fill="#4a78b5"/>'
            f'<text x="{_LABEL_W + w + 4}" y="{y + 13}">{n:,}</text>'
        )
    width = _LABEL_W + _BAR_W + 90
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
        + "".join(rows)
        + "</svg>"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(f'{v:,}' if isinstance(v, int) else str(v))}</td>" for v in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(
    w: ReportWriter, top_requests: list[tuple[str, int]], top_denied: list[tuple[str, int]]
) -> str:
    title = f"ferryman usage {w.month}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Sources: {html.escape(', '.join(w.sources))}. Days: {len(w.days)}"
        + (f"; missing: {html.escape(', '.join(w.missing_days))}" if w.missing_days else "")
        + ".</p>",
        "<h2>Groups</h2>",
        _table(
            ("group", "clients", "requests", "double clicks", "denied", "bytes in", "bytes out"),
            [
                (name, g.clients, g.total, g.suppressed, g.denied, g.bytes_in, g.bytes_out)
                for name, g in sorted(w.groups.items())
            ]
            + [
                (
                    "all groups",
                    w.totals.clients,
                    w.totals.total,
                    w.totals.suppressed,
                    w.totals.denied,
                    w.totals.bytes_in,
                    w.totals.bytes_out,
                )
            ],
        ),
    ]
    for name, g in sorted(w.groups.items()):
        top = top_sorted(g.top)
        parts.append(
            f"<h2>Group {html.escape(name)}: top {len(top)} of {g.clients:,} clients by requests</h2>"
        )
        parts.append(_chart(top))
    parts.append(f"<h2>Top {len(top_requests)} client IPs by requests</h2>")
    parts.append(_table(("ip", "requests"), top_requests))
    parts.append(f"<h2>Top {len(top_denied)} client IPs by denied requests</h2>")
    parts.append(_table(("ip", "denied"), top_denied))
    parts.append("</body></html>\n")
    return "\n".join(parts)
