"""Local days and months of an IANA time zone as UTC microsecond intervals, and text dates.

A usage day is the local calendar day ``[local midnight, next local midnight)`` of the configured zone,
so it holds 23 or 25 hours on DST change days.  Where local midnight does not exist (clocks jump at
00:00), the day begins when the clocks jump; where it occurs twice, at its first occurrence: both are
what ``fold=0`` gives (PEP 495).  Instants are integer microseconds since the Unix epoch (``*_us``), so
they compare and round-trip exactly.
"""

from __future__ import annotations

import calendar
import datetime as dt
import zoneinfo

US_PER_S = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BadValue(ValueError):
    """A date, month or time zone given by the operator could not be read; the message says why."""


def load_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise BadValue(f"unknown IANA time zone {name!r}") from exc


def parse_date(text: str) -> dt.date:
    """``YYYY-MM-DD``."""
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadValue(f"not a date (YYYY-MM-DD): {text!r}") from None


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` as ``(year, month)``."""
    try:
        if len(text) != 7 or text[4] != "-":
            raise ValueError(text)
        year, month = int(text[:4]), int(text[5:])
        dt.date(year, month, 1)
    except ValueError:
        raise BadValue(f"not a month (YYYY-MM): {text!r}") from None
    return year, month


def month_days(year: int, month: int) -> list[dt.date]:
    return [dt.date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)]


def is_last_day_of_month(day: dt.date) -> bool:
    return (day + dt.timedelta(days=1)).month != day.month


def to_us(when: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float on the way)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def from_us(t_us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=t_us)


def local_midnight_utc(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The UTC instant at which local ``day`` begins (see the module docstring for DST gaps)."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone, fold=0).astimezone(dt.UTC)


def day_bounds_us(day: dt.date, zone: zoneinfo.ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` of local ``day`` in UTC microseconds."""
    start = to_us(local_midnight_utc(day, zone))
    end = to_us(local_midnight_utc(day + dt.timedelta(days=1), zone))
    return start, end


def local_date(when_utc: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.date:
    return when_utc.astimezone(zone).date()


def iso_us(t_us: int) -> str:
    """``2026-11-22T19:30:00.123456Z``, the access log's own spelling."""
    return from_us(t_us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
