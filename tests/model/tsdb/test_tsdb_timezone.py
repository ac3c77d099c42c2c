"""Day rows in a configured time zone: a +05:30 zone and both DST days of America/New_York."""

from __future__ import annotations

import datetime as dt

import pytest

from model.tsdb.timezone import UnknownTimeZone, ZoneDays, format_instant, parse_instant

H = 3600


def utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


def test_half_hour_zone_days_begin_at_the_utc_hour_holding_local_midnight():
    kolkata = ZoneDays("Asia/Kolkata")
    # Local midnight 2024-03-10 is 2024-03-09T18:30Z; the day begins at 18:00Z (23:30 local).
    assert kolkata.bounds(dt.date(2024, 3, 10)) == (utc("2024-03-09T18:00"), utc("2024-03-10T18:00"))
    assert kolkata.day_of(utc("2024-03-09T18:15")) == dt.date(2024, 3, 10)  # 23:45 local on the 9th
    assert kolkata.day_of(utc("2024-03-09T17:59")) == dt.date(2024, 3, 9)


@pytest.mark.parametrize(
    ("day", "start", "end", "hours"),
    [
        (dt.date(2024, 3, 10), "2024-03-10T05:00", "2024-03-11T04:00", 23),  # spring forward
        (dt.date(2024, 11, 3), "2024-11-03T04:00", "2024-11-04T05:00", 25),  # fall back
        (dt.date(2024, 3, 11), "2024-03-11T04:00", "2024-03-12T04:00", 24),
    ],
)
def test_new_york_dst_days(day, start, end, hours):
    bounds = ZoneDays("America/New_York").bounds(day)
    assert bounds == (utc(start), utc(end))
    assert (bounds[1] - bounds[0]) // H == hours


def test_days_within_returns_only_whole_days():
    ny = ZoneDays("America/New_York")
    days = ny.days_within(utc("2024-03-09T06:00"), utc("2024-03-12T04:00"))
    assert [d for d, _, _ in days] == [dt.date(2024, 3, 10), dt.date(2024, 3, 11)]


def test_unknown_zone_is_a_clear_error(make_store):
    with pytest.raises(UnknownTimeZone, match="Mars/Olympus"):
        make_store(time_zone="Mars/Olympus")


def _hourly(make_store, zone: str, first: str, last: str):
    """One occurrence in every UTC hour from `first` to `last`, collected throughout, rolled up."""
    store = make_store(f"{zone.replace('/', '_')}-{first[:10]}.db", time_zone=zone, lateness_s=0)
    lo, hi = utc(first), utc(last)
    store.record_coverage(lo, hi)
    store.record_many([(ts + 600, "sessions_started", "pool", 1) for ts in range(lo, hi, H)])
    store.rollup(hi)
    return store


def test_store_day_rows_on_new_york_dst_days(make_store):
    store = _hourly(make_store, "America/New_York", "2024-03-09T00:00", "2024-03-12T12:00")
    days = dict(
        store.query("sessions_started", "pool", utc("2024-03-09T00:00"), utc("2024-03-12T12:00"), "day").rows
    )
    # The partial first and last local days have no row.
    assert days == {
        utc("2024-03-09T05:00"): 24.0,
        utc("2024-03-10T05:00"): 23.0,
        utc("2024-03-11T04:00"): 24.0,
    }
    fall = _hourly(make_store, "America/New_York", "2024-11-02T00:00", "2024-11-05T12:00")
    days = dict(
        fall.query("sessions_started", "pool", utc("2024-11-02T00:00"), utc("2024-11-05T12:00"), "day").rows
    )
    assert days == {
        utc("2024-11-02T04:00"): 24.0,
        utc("2024-11-03T04:00"): 25.0,
        utc("2024-11-04T05:00"): 24.0,
    }


def test_store_day_rows_in_a_half_hour_zone(make_store):
    store = _hourly(make_store, "Asia/Kolkata", "2024-03-09T12:00", "2024-03-11T20:00")
    result = store.query("sessions_started", "pool", utc("2024-03-09T12:00"), utc("2024-03-11T20:00"), "day")
    assert dict(result.rows) == {utc("2024-03-09T18:00"): 24.0, utc("2024-03-10T18:00"): 24.0}
    local_dates = store._db.execute("SELECT DISTINCT local_date FROM day ORDER BY start").fetchall()
    assert local_dates == [("2024-03-10",), ("2024-03-11",)]


def test_reopening_with_another_zone_is_refused(make_store):
    from model.tsdb import StoreSettingsMismatch

    make_store("z.db", time_zone="Asia/Kolkata").close()
    with pytest.raises(StoreSettingsMismatch, match="time_zone=Asia/Kolkata"):
        make_store("z.db", time_zone="UTC")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-10T05:00:00Z", 1710046800.0),
        ("2024-03-10T10:30:00+05:30", 1710046800.0),
        ("2024-03-10T05:00:00", 1710046800.0),
        ("1710046800", 1710046800.0),
        (1710046800.5, 1710046800.5),
    ],
)
def test_parse_instant(text, expected):
    assert parse_instant(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "2024-13-01T00:00:00Z", "-5", "nan", True])
def test_parse_instant_rejects(text):
    with pytest.raises(ValueError):
        parse_instant(text)


def test_format_instant():
    assert format_instant(1710046800) == "2024-03-10T05:00:00Z"
    assert format_instant(1710046800.25) == "2024-03-10T05:00:00.250000Z"
