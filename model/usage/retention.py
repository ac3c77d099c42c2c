"""Retention ("grooming"): remove daily directories older than ``retention_days``.

A day directory ``YYYY/MM/DD`` is removed when ``today - day > retention_days``; so with
``retention_days: 1`` yesterday's files (whose open sessions tonight's job needs) are kept.  Monthly
reports (``YYYY/MM/report.*``) are small and kept; month and year directories left empty are removed.
Only what looks like the usage layout is touched: four-digit years, two-digit months and days that
form a real date, and within a day directory only usage files (``*.stats.gz``, ``*.ips.gz``,
``*.sessions.gz``, ``*.summary.json`` and their temporary siblings).  Anything else stays, and so does
its directory.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from dataclasses import dataclass

_SUFFIXES = (".stats.gz", ".ips.gz", ".sessions.gz", ".summary.json")


@dataclass(frozen=True, slots=True)
class GroomResult:
    removed_days: tuple[str, ...]
    kept_days: int
    removed_files: int
    dry_run: bool = False


def _is_usage_file(name: str) -> bool:
    base = name
    if name.startswith(".") and ".tmp-" in name:
        base = name[1 : name.index(".tmp-")]
    return base.endswith(_SUFFIXES)


def _days(out: pathlib.Path) -> list[tuple[dt.date, pathlib.Path]]:
    found = []
    for year in sorted(out.iterdir()) if out.is_dir() else []:
        if not (year.is_dir() and len(year.name) == 4 and year.name.isdigit()):
            continue
        for month in sorted(year.iterdir()):
            if not (month.is_dir() and len(month.name) == 2 and month.name.isdigit()):
                continue
            for day in sorted(month.iterdir()):
                if not (day.is_dir() and len(day.name) == 2 and day.name.isdigit()):
                    continue
                try:
                    date = dt.date(int(year.name), int(month.name), int(day.name))
                except ValueError:
                    continue
                found.append((date, day))
    return found


def groom(
    out_dir: str | pathlib.Path, retention_days: int, today: dt.date, *, dry_run: bool = False
) -> GroomResult:
    """Remove the daily files of days more than ``retention_days`` before ``today``."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    out = pathlib.Path(out_dir)
    cutoff = today - dt.timedelta(days=retention_days)
    removed: list[str] = []
    kept = 0
    n_files = 0
    for date, path in _days(out):
        if date >= cutoff:
            kept += 1
            continue
        removed.append(date.isoformat())
        for f in sorted(path.iterdir()):
            if f.is_file() and _is_usage_file(f.name):
                n_files += 1
                if not dry_run:
                    f.unlink(missing_ok=True)
        if not dry_run:
            _rmdir_if_empty(path)
            _rmdir_if_empty(path.parent)
            _rmdir_if_empty(path.parent.parent)
    return GroomResult(removed_days=tuple(removed), kept_days=kept, removed_files=n_files, dry_run=dry_run)


def _rmdir_if_empty(path: pathlib.Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (or already gone): leave it
