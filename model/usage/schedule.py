"""Running the daily job inside the proxy, shortly after local midnight (``usage.schedule: true``).

``next_daily_run`` is the sans-IO part: from the current UTC instant and the configured IANA zone it
gives the next run instant (``RUN_DELAY_S`` after the next local midnight, so that the access log has
flushed the day's last lines) and the local day that run processes (the one that just ended).  DST is
the zone's business: on a 23- or 25-hour day the run is still just after local midnight.

``run_scheduled`` is the task the proxy owns.  It first catches up on yesterday if its files are
missing (the proxy was down at midnight), then loops: wait for the next run instant (or ``stop_event``),
run the daily job in a worker thread (``asyncio.to_thread``: it is blocking, CPU-bound work), after the
last day of a month run the month-end job, then groom old days.  A failed run is logged and the loop
goes on; the proxy never stops because of usage reporting.  When the task is cancelled, the job in
the thread is told to stop at its next block and the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import pathlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from model.usage.localtime import is_last_day_of_month, load_zone, local_midnight_utc

#: Run this long after local midnight: the proxy flushes its access log every tick, and lines are
#: written when a connection ends, so the last lines of the day are on disk well within a minute.
RUN_DELAY_S = 60.0
#: Re-read the clock at least this often while waiting (suspend, clock steps).
MAX_WAIT_S = 300.0


class EventLog(Protocol):
    """What the proxy's ``proxy.logs.Logger`` offers: snake_case events with keyword fields."""

    def info(self, event: str, **fields: Any) -> None: ...

    def error(self, event: str, **fields: Any) -> None: ...


class _StdLog:
    def __init__(self) -> None:
        self._log = logging.getLogger("ferryman.usage")

    def info(self, event: str, **fields: Any) -> None:
        self._log.info("%s %s", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log.error("%s %s", event, fields)


def next_daily_run(
    now_utc: dt.datetime, time_zone: str, *, delay_s: float = RUN_DELAY_S
) -> tuple[dt.datetime, dt.date]:
    """The first run instant strictly after ``now_utc`` (UTC) and the local date it processes."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be an aware datetime (UTC)")
    zone = load_zone(time_zone)
    delay = dt.timedelta(seconds=delay_s)
    today = now_utc.astimezone(zone).date()
    # Today's run (for yesterday) if it is still ahead, else tomorrow's (for today).  With a delay
    # longer than a short day, a later midnight may be needed: walk forward until one is ahead.
    day = today - dt.timedelta(days=1)
    while True:
        run_at = local_midnight_utc(day + dt.timedelta(days=1), zone) + delay
        if run_at > now_utc:
            return run_at, day
        day += dt.timedelta(days=1)


async def _wait_until(
    run_at: dt.datetime, now_fn: Callable[[], dt.datetime], stop_event: asyncio.Event
) -> bool:
    """Wait for ``run_at`` by ``now_fn``'s clock; True if ``stop_event`` was set first."""
    while not stop_event.is_set():
        remaining_s = (run_at - now_fn()).total_seconds()
        if remaining_s <= 0:
            return False
        try:
            async with asyncio.timeout(min(remaining_s, MAX_WAIT_S)):
                await stop_event.wait()
        except TimeoutError:
            continue
    return True


async def run_scheduled(
    options: Any,
    now_fn: Callable[[], dt.datetime],
    stop_event: asyncio.Event,
    *,
    log: EventLog | None = None,
    wait_until: Callable[[dt.datetime], Awaitable[bool]] | None = None,
    catch_up: bool = True,
) -> None:
    """Run the daily job after every local midnight until ``stop_event`` is set.

    ``now_fn`` returns the current aware UTC datetime.  ``wait_until(instant)`` waits for an instant
    and returns True to stop (default: by ``now_fn`` and ``stop_event``; tests pass a fake clock's).
    """
    from model.usage.files import stats_path

    events: EventLog = log if log is not None else _StdLog()
    waiter = wait_until if wait_until is not None else (lambda at: _wait_until(at, now_fn, stop_event))
    zone = load_zone(options.time_zone)
    cancel = threading.Event()
    try:
        if catch_up:
            yesterday = now_fn().astimezone(zone).date() - dt.timedelta(days=1)
            if not stats_path(pathlib.Path(options.output_dir), yesterday, options.source).exists():
                await _run_day(options, yesterday, now_fn, events, cancel)
        while not stop_event.is_set():
            run_at, day = next_daily_run(now_fn(), options.time_zone)
            events.info("usage_run_scheduled", at=run_at.isoformat(), date=day.isoformat())
            if await waiter(run_at) or stop_event.is_set():
                return
            await _run_day(options, day, now_fn, events, cancel)
    except asyncio.CancelledError:
        cancel.set()  # the worker thread stops at its next block instead of running to the end
        raise


async def _run_day(
    options: Any,
    day: dt.date,
    now_fn: Callable[[], dt.datetime],
    events: EventLog,
    cancel: threading.Event,
) -> None:
    from model.usage.daily import run_daily
    from model.usage.errors import Cancelled, UsageError
    from model.usage.monthly import run_monthly
    from model.usage.retention import groom

    try:
        result = await asyncio.to_thread(run_daily, options, day, cancel=cancel)
        events.info(
            "usage_daily_done",
            date=day.isoformat(),
            lines=result.lines_read,
            bad_lines=result.bad_lines,
            clients=result.clients,
            requests=result.requests,
            duration_s=round(result.elapsed_s, 3),
            warnings=list(result.warnings),
        )
        if is_last_day_of_month(day):
            month = f"{day.year:04d}-{day.month:02d}"
            monthly = await asyncio.to_thread(run_monthly, options, month, cancel=cancel)
            events.info(
                "usage_monthly_done",
                month=month,
                clients=monthly.clients,
                duration_s=round(monthly.elapsed_s, 3),
            )
        today = now_fn().astimezone(load_zone(options.time_zone)).date()
        groomed = await asyncio.to_thread(groom, options.output_dir, options.retention_days, today)
        if groomed.removed_days:
            events.info("usage_groomed", removed_days=len(groomed.removed_days), kept_days=groomed.kept_days)
    except Cancelled:
        events.info("usage_daily_cancelled", date=day.isoformat())
    except UsageError as exc:
        events.error("usage_daily_failed", date=day.isoformat(), error=str(exc))
    except Exception as exc:  # a bug or a full disk must not take the proxy down with it
        events.error("usage_daily_failed", date=day.isoformat(), error=f"{type(exc).__name__}: {exc}")
