"""Day boundaries in a configured IANA time zone, snapped to UTC hours; instants as text.

Day rows are built from hour rows, and hour rows are UTC hours, so a day must be a whole number of UTC
hours.  A local day therefore begins at the start of the UTC hour in which local midnight falls (the
floor of local midnight to a UTC hour boundary) and ends where the next local day begins:

- whole-hour zones (UTC, Europe/Paris, America/New_York): days begin exactly at local midnight;
- +05:30 (Asia/Kolkata): local midnight is 18:30 UTC, so the day begins at 18:00 UTC, that is at
  23:30 local time on the previous date, and holds 24 hours of data from 23:30 to 23:30 local time;
  +05:45 and +12:45 zones begin 45 minutes early, -03:30 (St John's) 30 minutes early;
- DST: America/New_York's spring-forward day (e.g. 2024-03-10) runs from 05:00 to 04:00 UTC the next
  day and holds 23 hour rows; its fall-back day (2024-11-03) runs 04:00 to 05:00 UTC and holds 25.
  Where local midnight itself does not exist (clocks jump at 00:00), the day begins when the clocks
  jump; where it occurs twice, at the first occurrence.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo

HOUR_S = 3600
_UTC = dt.UTC


class UnknownTimeZone(ValueError):
    pass


def load_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimeZone(f"unknown IANA time zone {name!r}") from exc


class ZoneDays:
    """Local days of one time zone as ``[start, end)`` UTC epoch seconds on hour boundaries."""

    __slots__ = ("_cache", "name", "zone")

    def __init__(self, name: str) -> None:
        self.name = name
        self.zone = load_zone(name)
        self._cache: dict[dt.date, int] = {}

    def day_start(self, day: dt.date) -> int:
        """UTC epoch second at which local ``day`` begins (floor of local midnight to a UTC hour)."""
        cached = self._cache.get(day)
        if cached is None:
            # fold=0: a nonexistent midnight resolves to the instant the clocks jump, an ambiguous one
            # to its first occurrence (PEP 495).
            midnight = dt.datetime(day.year, day.month, day.day, tzinfo=self.zone)
            cached = math.floor(midnight.timestamp() / HOUR_S) * HOUR_S
            self._cache[day] = cached
        return cached

    def bounds(self, day: dt.date) -> tuple[int, int]:
        return self.day_start(day), self.day_start(day + dt.timedelta(days=1))

    def day_of(self, ts: float) -> dt.date:
        """The local day whose snapped bounds contain ``ts``."""
        day = dt.datetime.fromtimestamp(ts, self.zone).date()
        # Snapping moves a boundary by less than an hour, so at most one step either way.
        if ts < self.day_start(day):
            return day - dt.timedelta(days=1)
        if ts >= self.day_start(day + dt.timedelta(days=1)):
            return day + dt.timedelta(days=1)
        return day

    def days_within(self, lo: float, hi: float) -> list[tuple[dt.date, int, int]]:
        """Every day ``(date, start, end)`` with ``lo <= start`` and ``end <= hi``, in order."""
        out: list[tuple[dt.date, int, int]] = []
        if hi <= lo:
            return out
        day = self.day_of(lo)
        start, end = self.bounds(day)
        if start < lo:
            day += dt.timedelta(days=1)
            start, end = self.bounds(day)
        while end <= hi:
            out.append((day, start, end))
            day += dt.timedelta(days=1)
            start, end = end, self.day_start(day + dt.timedelta(days=1))
        return out


def parse_instant(text: str | float | int) -> float:
    """ISO-8601 (``Z`` or an offset; no offset means UTC) or epoch seconds → UTC epoch seconds.

    Raises ValueError with a readable message.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a time: {text!r}")
    if isinstance(text, int | float):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            value = float(s)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(s)
            except ValueError:
                raise ValueError(f"not an ISO-8601 time or epoch seconds: {text!r}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=_UTC)
            value = parsed.timestamp()
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"time out of range: {text!r}")
    return value


def format_instant(ts: float) -> str:
    """UTC epoch seconds → ``2024-03-10T05:00:00Z`` (fractional seconds kept when present)."""
    moment = dt.datetime.fromtimestamp(ts, _UTC)
    text = moment.isoformat(timespec="seconds" if moment.microsecond == 0 else "microseconds")
    return text.replace("+00:00", "Z")
