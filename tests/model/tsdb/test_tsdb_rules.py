"""Hand-computed cases for each summarisation rule (issue 4, item 2; DESIGN section 6)."""

from __future__ import annotations

import pytest

from model.tsdb.rollup import concurrent_sessions

H = 3600


def minute_rows(store, metric, entity, start, end):
    return dict(store.query(metric, entity, start, end, "minute").rows)


# -- kinds ---------------------------------------------------------------------------------------------


def test_duration_hour_is_exact_average_never_average_of_averages(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0, t0 + H)
    # Minute 0: three connects of 1 s (average 1.0).  Minute 1: one connect of 4 s (average 4.0).
    for second in (1, 2, 3):
        store.record(t0 + second, "connect_duration_s", "game/s1", 1.0)
    store.record(t0 + 61, "connect_duration_s", "game/s1", 4.0)
    store.rollup(t0 + H)
    assert minute_rows(store, "connect_duration_s", "game/s1", t0, t0 + 120) == {t0: 1.0, t0 + 60: 4.0}
    hour = store.query("connect_duration_s", "game/s1", t0, t0 + H, "hour").rows
    # (1 + 1 + 1 + 4) / 4 events = 1.75, not (1.0 + 4.0) / 2 = 2.5.
    assert hour == ((t0, 1.75),)


def test_duration_pairs_and_day_average_are_exact(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0, t0 + 24 * H)
    store.record(t0 + 10, "session_duration_s", "pool", (30.0, 3))  # three sessions, 30 s in all
    store.record(t0 + 5 * H, "session_duration_s", "pool", 90.0)  # one more, alone in its hour
    store.record(t0 + 6 * H, "session_duration_s", "pool", (0.0, 0))  # no event: no row
    store.rollup(t0 + 25 * H)
    hours = dict(store.query("session_duration_s", "pool", t0, t0 + 24 * H, "hour").rows)
    assert hours == {t0: 10.0, t0 + 5 * H: 90.0}
    # Day: 120 s over 4 sessions = 30.0 (the average of hour averages would be 50.0).
    assert store.query("session_duration_s", "pool", t0, t0 + 24 * H, "day").rows == ((t0, 30.0),)


def test_state_is_max_and_occurrence_is_sum(make_store, t0, tick):
    store = make_store(lateness_s=0)
    gauge = {0: 3, 1: 7, 2: 2}
    for second in range(120):
        store.record_snapshot(
            t0 + second,
            {
                ("backends_failed", "game"): gauge.get(second, 1 if second < 60 else 4),
                ("bytes_out", "game"): 10,
            },
        )
    store.rollup(t0 + 120)
    assert minute_rows(store, "backends_failed", "game", t0, t0 + 120) == {t0: 7.0, t0 + 60: 4.0}
    assert minute_rows(store, "bytes_out", "game", t0, t0 + 120) == {t0: 600.0, t0 + 60: 600.0}


# -- concurrency minute rule ---------------------------------------------------------------------------


def test_sessions_present_in_a_minute_all_count_even_if_they_never_overlap(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0, t0 + H)
    store.record_session("game/s1", "a", t0 + 10, t0 + 20)  # minute 0 only
    store.record_session("game/s1", "b", t0 + 50, t0 + 55)  # minute 0 only, after a ended
    store.record_session("game/s1", "c", t0 + 60, t0 + 120)  # minute 1; ends exactly as minute 2 begins
    store.record_session("game/s1", "d", t0 + 119.5, None)  # from the last instant of minute 1, open
    store.record_session("game/s1", "e", t0 + 180, t0 + 180)  # zero-length, at the start of minute 3
    store.rollup(t0 + 300)
    assert minute_rows(store, "sessions_connected", "game/s1", t0, t0 + 300) == {
        t0: 2.0,
        t0 + 60: 2.0,
        t0 + 120: 1.0,
        t0 + 180: 2.0,
        t0 + 240: 1.0,
    }
    # The hour is the max of its minutes (only a complete hour gets a row).
    store.rollup(t0 + H)
    assert store.query("sessions_connected", "game/s1", t0, t0 + H, "hour").rows == ((t0, 2.0),)


def test_session_count_and_gauge_combine_by_max(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0, t0 + 180)
    store.record_session("lobby", "a", t0 + 5, t0 + 100)
    store.record(t0 + 70, "sessions_connected", "lobby", 5)  # the gauge saw more (e.g. untracked)
    store.record(t0 + 130, "sessions_connected", "lobby", 0)  # gauge only, no session present
    store.rollup(t0 + 180)
    assert minute_rows(store, "sessions_connected", "lobby", t0, t0 + 180) == {
        t0: 1.0,
        t0 + 60: 5.0,
        t0 + 120: 0.0,
    }


def test_concurrent_sessions_rule_directly():
    sessions = [(1, 10.0, 20.0), (1, 50.0, 55.0), (2, 0.0, None), (1, 130.0, 130.0), (1, -500.0, 60.0)]
    got = concurrent_sessions(sessions, (0, 180))
    assert got == {(1, 0): 3, (2, 0): 1, (2, 60): 1, (2, 120): 1, (1, 120): 1}


# -- complete intervals only ---------------------------------------------------------------------------


def test_partial_first_and_last_minutes_get_no_rows(make_store, t0, tick):
    store = make_store(lateness_s=0)
    tick(store, t0 + 30, t0 + 201, {("frames_in", "c"): 1})  # collection from :30 to 3:21
    store.rollup(t0 + 1000)
    assert minute_rows(store, "frames_in", "c", t0, t0 + 600) == {t0 + 60: 60.0, t0 + 120: 60.0}
    # The raw rows of the partial minutes are still there.
    raw = store.query("frames_in", "c", t0, t0 + 600, "raw").rows
    assert len(raw) == 171 and raw[0][0] == t0 + 30


def test_interval_still_open_gets_no_row_until_closed_plus_lateness(make_store, t0, tick):
    store = make_store(lateness_s=5)
    tick(store, t0, t0 + 150, {("errors", "x"): 1})
    store.rollup(t0 + 124.9)  # minute 1 closes at 120 but lateness runs to 125
    assert minute_rows(store, "errors", "x", t0, t0 + 300) == {t0: 60.0}
    assert store.rollup(t0 + 125) == 1
    assert minute_rows(store, "errors", "x", t0, t0 + 300) == {t0: 60.0, t0 + 60: 60.0}


def test_late_events_within_lateness_count_and_after_are_dropped(make_store, t0, tick):
    store = make_store(lateness_s=5)
    tick(store, t0, t0 + 125, {("connection_failures", "s1"): 0})
    store.rollup(t0 + 123)
    store.record(t0 + 61, "connection_failures", "s1", 2)  # arrives at :123, inside the lag
    assert store.rollup(t0 + 125) == 1
    assert minute_rows(store, "connection_failures", "s1", t0, t0 + 120) == {t0: 0.0, t0 + 60: 2.0}
    # After the minute was summarised: dropped, counted, and neither raw nor minute rows change.
    store.record(t0 + 62, "connection_failures", "s1", 9)
    assert store.statistics().late_rows_dropped == 1
    assert minute_rows(store, "connection_failures", "s1", t0, t0 + 120) == {t0: 0.0, t0 + 60: 2.0}
    raw = dict(store.query("connection_failures", "s1", t0 + 60, t0 + 120, "raw").rows)
    assert raw[t0 + 62] == 0.0
    assert store.record_snapshot(t0 + 62, {("connection_failures", "s1"): 9}) == 0


def test_collection_gap_leaves_no_rows_not_zeros(make_store, t0, tick):
    store = make_store(lateness_s=0)
    tick(store, t0, t0 + 121, {("bytes_in", "s1"): 1})  # minutes 0-1, one second of minute 2
    tick(store, t0 + 300, t0 + 481, {("bytes_in", "s1"): 1})  # resumes at minute 5
    store.rollup(t0 + 600)
    assert minute_rows(store, "bytes_in", "s1", t0, t0 + 600) == {
        t0: 60.0,
        t0 + 60: 60.0,
        t0 + 300: 60.0,
        t0 + 360: 60.0,
        t0 + 420: 60.0,
    }


@pytest.mark.parametrize(("missing", "has_row"), [((30,), True), ((30, 31), True), ((30, 31, 32), False)])
def test_jitter_is_not_a_gap_but_a_longer_hole_is(make_store, t0, missing, has_row):
    store = make_store(lateness_s=0)  # gap tolerance: 2 intervals
    for second in range(60):
        if second not in missing:
            store.record_snapshot(t0 + second, {("frames_out", "s"): 1})
    store.rollup(t0 + 60)
    expected = {t0: 60.0 - len(missing)} if has_row else {}
    assert minute_rows(store, "frames_out", "s", t0, t0 + 60) == expected


def test_hour_needs_its_first_and_last_minute_covered(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0 + 30, t0 + 3 * H - 30)  # starts 30 s into hour 0, stops 30 s before hour 3
    for h in range(3):
        store.record(t0 + h * H + 600, "sessions_started", "p", 1)
    store.rollup(t0 + 4 * H)
    assert dict(store.query("sessions_started", "p", t0, t0 + 3 * H, "hour").rows) == {t0 + H: 1.0}


# -- idempotent, immutable -----------------------------------------------------------------------------


def test_rollup_is_idempotent_and_incremental(make_store, t0, tick):
    once = make_store("once.db", lateness_s=2)
    steps = make_store("steps.db", lateness_s=2)
    values = {("bytes_in", "a"): 3, ("connect_duration_s", "a"): 0.25, ("sessions_connected", "a"): 2}
    for store in (once, steps):
        tick(store, t0, t0 + 2 * H + 30, values)
    written = once.rollup(t0 + 3 * H)
    assert written > 0
    assert once.rollup(t0 + 3 * H) == 0
    assert once.rollup(t0 + H) == 0  # an earlier clock decides nothing again
    total = sum(steps.rollup(t0 + s) for s in (59, 61, 62, 1000, H + 1, H + 64, 2 * H + 1, 3 * H))
    assert total == written
    for metric in ("bytes_in", "connect_duration_s", "sessions_connected"):
        for g in ("minute", "hour"):
            assert (
                once.query(metric, "a", t0, t0 + 3 * H, g).rows
                == steps.query(metric, "a", t0, t0 + 3 * H, g).rows
            )


def test_decided_ranges_survive_reopening(tmp_path, t0):
    from model.tsdb import SeriesStore

    path = tmp_path / "m.db"
    with SeriesStore(path, lateness_s=0) as store:
        for s in range(120):
            store.record_snapshot(t0 + s, {("errors", "e"): 1})
        assert store.rollup(t0 + 120) == 2
    with SeriesStore(path, lateness_s=0) as store:
        assert store.rollup(t0 + 120) == 0
        store.record(t0 + 5, "errors", "e", 1)  # still late after a restart
        assert store.statistics().late_rows_dropped == 1
        assert dict(store.query("errors", "e", t0, t0 + 120).rows) == {t0: 60.0, t0 + 60: 60.0}


def test_backfill_older_than_anything_decided_is_accepted(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0 + H, t0 + 2 * H)
    store.record(t0 + H + 5, "bytes_in", "b", 1)
    store.rollup(t0 + 2 * H)
    # History from before collection started, loaded afterwards.
    store.record_many([(t0 + 10, "bytes_in", "b", 4)], mark_coverage=False)
    store.record_coverage(t0, t0 + H)
    store.rollup(t0 + 2 * H)
    assert dict(store.query("bytes_in", "b", t0, t0 + 2 * H, "hour").rows) == {t0: 4.0, t0 + H: 1.0}
    assert store.statistics().late_rows_dropped == 0
