"""The benchmark's synthetic month is what the pipeline expects: readable, in order, one day per file."""

from __future__ import annotations

import pathlib

from bench.usage import GenSpec, generate_day, synthetic_stats_month
from tests.model.usage.helpers import daily, monthly, report


def test_generated_days_are_clean_access_logs(tmp_path: pathlib.Path) -> None:
    spec = GenSpec(2026, 11, 30, lines=6_000, clients=50, seed=7)
    day2 = tmp_path / "access-2026-11-02.log"
    n = generate_day(spec, 1, str(day2))
    assert n > 100
    r = daily(tmp_path / "out", "2026-11-02", day2, seek=False)
    assert (r.lines_read, r.lines_used, r.bad_lines) == (n, n, 0)
    assert r.sessions_restored == 0 and r.clients > 0 and r.denied >= 0 and r.suppressed > 0
    again = tmp_path / "again.log"
    generate_day(spec, 1, str(again))
    assert again.read_bytes() == day2.read_bytes()  # seeded: the same month every run


def test_synthetic_daily_files_merge(tmp_path: pathlib.Path) -> None:
    made = synthetic_stats_month(tmp_path / "out", clients=40, lines_per_day=30, days=3, seed=1)
    assert made == 90
    monthly(tmp_path / "out", "2026-11")
    month = report(tmp_path / "out", "2026-11")
    assert month["days"] == ["2026-11-01", "2026-11-02", "2026-11-03"] and 10 <= len(month["clients"]) <= 30
