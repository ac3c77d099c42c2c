"""Local days across DST, the next run after local midnight, and the proxy-owned scheduled task."""

from __future__ import annotations

import asyncio
import datetime as dt
import pathlib

import pytest

from model.usage.localtime import day_bounds_us, from_us, load_zone
from model.usage.options import UsageOptions
from model.usage.schedule import next_daily_run, run_scheduled
from tests.model.usage.helpers import line, stats, write_log

UTC = dt.UTC


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "day", "start", "end"),
    [
        ("UTC", "2026-11-10", utc(2026, 11, 10), utc(2026, 11, 11)),
        ("Europe/Paris", "2026-11-10", utc(2026, 11, 9, 23), utc(2026, 11, 10, 23)),
        ("Asia/Kolkata", "2026-11-10", utc(2026, 11, 9, 18, 30), utc(2026, 11, 10, 18, 30)),
        # Spring forward: 23 hours; fall back: 25 hours.
        ("America/New_York", "2026-03-08", utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
        ("America/New_York", "2026-11-01", utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
        # Havana jumps from 00:00 to 01:00: the day begins when the clocks jump (05:00 UTC).
        ("America/Havana", "2026-03-08", utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
    ],
)
def test_local_day_bounds(zone: str, day: str, start: dt.datetime, end: dt.datetime) -> None:
    s, e = day_bounds_us(dt.date.fromisoformat(day), load_zone(zone))
    assert (from_us(s), from_us(e)) == (start, end)


@pytest.mark.parametrize(
    ("now", "zone", "run_at", "date"),
    [
        (utc(2026, 11, 10, 12), "UTC", utc(2026, 11, 11, 0, 1), "2026-11-10"),
        (utc(2026, 11, 10, 0, 0, 30), "UTC", utc(2026, 11, 10, 0, 1), "2026-11-09"),  # just after midnight
        (utc(2026, 11, 10, 0, 1), "UTC", utc(2026, 11, 11, 0, 1), "2026-11-10"),  # strictly after now
        (utc(2026, 11, 10, 23, 30), "Europe/Paris", utc(2026, 11, 11, 23, 1), "2026-11-11"),  # 00:30 local
        (utc(2026, 3, 7, 12), "America/New_York", utc(2026, 3, 8, 5, 1), "2026-03-07"),
        (utc(2026, 3, 8, 12), "America/New_York", utc(2026, 3, 9, 4, 1), "2026-03-08"),  # after a 23 h day
    ],
)
def test_next_daily_run(now: dt.datetime, zone: str, run_at: dt.datetime, date: str) -> None:
    assert next_daily_run(now, zone) == (run_at, dt.date.fromisoformat(date))


def test_next_daily_run_wants_an_aware_time() -> None:
    with pytest.raises(ValueError):
        next_daily_run(dt.datetime(2026, 11, 10, 12), "UTC")


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.waits: list[dt.datetime] = []

    def __call__(self) -> dt.datetime:
        return self.now


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.seen.append((event, fields))

    def error(self, event: str, **fields: object) -> None:
        self.seen.append((event, fields))


async def test_run_scheduled_catches_up_runs_after_midnight_and_grooms(tmp_path: pathlib.Path) -> None:
    log = write_log(
        tmp_path / "access.log",
        [
            line("2026-11-09T10:00:00", client_id="alice"),
            line("2026-11-10T10:00:00", client_id="bob"),
            line("2026-11-30T10:00:00", client_id="carol"),
        ],
    )
    out = tmp_path / "usage"
    old_day = out / "2025" / "01" / "01"
    old_day.mkdir(parents=True)
    (old_day / "ferryman.stats.gz").write_bytes(b"")
    options = UsageOptions(schedule=True, input=str(log), output_dir=str(out), retention_days=400)
    clock = FakeClock(utc(2026, 11, 10, 12))  # the proxy starts at noon; yesterday is not done
    stop = asyncio.Event()
    events = Events()

    async def wait_until(at: dt.datetime) -> bool:
        clock.waits.append(at)
        clock.now = at  # time flies
        if len(clock.waits) == 3:
            stop.set()
            return True
        return False

    await run_scheduled(options, clock, stop, log=events, wait_until=wait_until)

    # Catch-up for 9 November at start, then the runs after midnight for the 10th and the 11th.
    assert clock.waits == [utc(2026, 11, 11, 0, 1), utc(2026, 11, 12, 0, 1), utc(2026, 11, 13, 0, 1)]
    assert stats(out, "2026-11-09") == ["all|alice|play|1|0|0|0|0|1"]
    assert stats(out, "2026-11-10") == ["all|bob|play|1|0|0|0|0|1"]
    assert stats(out, "2026-11-11") == []
    done = [f["date"] for e, f in events.seen if e == "usage_daily_done"]
    assert done == ["2026-11-09", "2026-11-10", "2026-11-11"]
    assert not old_day.exists() and not (out / "2025").exists()  # groomed: older than 400 days


async def test_run_scheduled_runs_the_month_end_and_survives_failures(tmp_path: pathlib.Path) -> None:
    log = write_log(tmp_path / "access.log", [line("2026-11-30T10:00:00", client_id="carol")])
    out = tmp_path / "usage"
    clock = FakeClock(utc(2026, 11, 30, 12))
    stop = asyncio.Event()
    events = Events()
    calls = 0

    async def wait_until(at: dt.datetime) -> bool:
        nonlocal calls
        calls += 1
        clock.now = at
        if calls == 2:
            log.unlink()  # the next run fails: logged, and the loop goes on
        if calls == 3:
            return True
        return False

    options = UsageOptions(input=str(log), output_dir=str(out))
    await run_scheduled(options, clock, stop, log=events, wait_until=wait_until, catch_up=False)
    names = [e for e, _ in events.seen if e != "usage_run_scheduled"]
    assert names == ["usage_daily_done", "usage_monthly_done", "usage_daily_failed"]
    assert (out / "2026" / "11" / "report.json").exists()
    failed = next(f for e, f in events.seen if e == "usage_daily_failed")
    assert failed["date"] == "2026-12-01" and "cannot read input" in str(failed["error"])


async def test_run_scheduled_stops_when_asked(tmp_path: pathlib.Path) -> None:
    stop = asyncio.Event()
    stop.set()
    clock = FakeClock(utc(2026, 11, 10, 12))
    options = UsageOptions(input=str(tmp_path / "none.log"), output_dir=str(tmp_path / "usage"))
    await run_scheduled(options, clock, stop, log=Events(), catch_up=False)  # returns at once


async def test_default_wait_returns_when_stopped(tmp_path: pathlib.Path) -> None:
    waiting = asyncio.Event()
    calls = 0

    def now() -> dt.datetime:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second reading is the waiter's: it is about to wait
            waiting.set()
        return utc(2026, 11, 10, 12)

    stop = asyncio.Event()
    options = UsageOptions(input=str(tmp_path / "none.log"), output_dir=str(tmp_path / "usage"))
    task = asyncio.create_task(run_scheduled(options, now, stop, log=Events(), catch_up=False))
    await waiting.wait()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert task.done() and task.exception() is None
