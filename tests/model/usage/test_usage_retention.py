"""Grooming: daily directories past retention go, everything else stays."""

from __future__ import annotations

import datetime as dt
import pathlib

import pytest

from model.usage.retention import groom


def make_day(out: pathlib.Path, day: str, *names: str) -> pathlib.Path:
    path = out.joinpath(*day.split("-"))
    path.mkdir(parents=True, exist_ok=True)
    for name in names or (
        "ferryman.stats.gz",
        "ferryman.ips.gz",
        "ferryman.sessions.gz",
        "ferryman.summary.json",
    ):
        (path / name).write_bytes(b"x")
    return path


def test_groom_removes_days_older_than_retention(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "usage"
    today = dt.date(2026, 11, 10)
    kept_edge = make_day(out, "2026-11-07")  # 3 days old: kept with retention 3
    gone_edge = make_day(out, "2026-11-06")  # 4 days old: removed
    old_month = make_day(out, "2026-10-01")
    (out / "2026" / "10" / "report.json").write_bytes(b"{}")  # monthly reports stay
    old_year = make_day(out, "2025-12-31")
    r = groom(out, 3, today)
    assert r.removed_days == ("2025-12-31", "2026-10-01", "2026-11-06")
    assert (r.kept_days, r.removed_files) == (1, 12)
    assert kept_edge.exists() and not gone_edge.exists() and not old_month.exists() and not old_year.exists()
    assert (out / "2026" / "10" / "report.json").exists()
    assert not (out / "2025").exists()  # empty month and year directories go too


def test_groom_leaves_foreign_files_and_directories(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "usage"
    day = make_day(out, "2020-01-01", "ferryman.stats.gz", "notes.txt", ".ferryman.stats.gz.tmp-123")
    (out / "2020" / "01" / "not-a-day").mkdir()
    (out / "2020" / "13" / "01").mkdir(parents=True)  # not a date
    r = groom(out, 30, dt.date(2026, 11, 10))
    assert r.removed_days == ("2020-01-01",) and r.removed_files == 2
    assert sorted(p.name for p in day.iterdir()) == ["notes.txt"]
    assert (out / "2020" / "01" / "not-a-day").exists() and (out / "2020" / "13" / "01").exists()


def test_groom_dry_run_and_limits(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "usage"
    day = make_day(out, "2020-01-01")
    r = groom(out, 1, dt.date(2026, 11, 10), dry_run=True)
    assert r.removed_days == ("2020-01-01",) and r.dry_run and day.exists()
    assert groom(tmp_path / "missing", 1, dt.date(2026, 11, 10)).removed_days == ()
    with pytest.raises(ValueError):
        groom(out, 0, dt.date(2026, 11, 10))
