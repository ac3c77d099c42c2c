"""Property tests: coarser rows are exactly the SUM / MAX / exact AVG of finer rows, whatever arrives."""

from __future__ import annotations

import itertools
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.tsdb import SeriesStore

T0 = 1_709_510_400  # 2024-03-04T00:00:00Z
H = 3600
METRICS = ("bytes_in", "backends_failed", "connect_duration_s")
ENTITIES = ("a", "b")

events = st.lists(
    st.tuples(
        st.integers(0, 3 * H - 1),  # second
        st.sampled_from(METRICS),
        st.sampled_from(ENTITIES),
        st.integers(0, 1000),
    ),
    max_size=80,
)
# Coverage: a few spans inside three hours, so some minutes and hours are incomplete.
spans = st.lists(st.tuples(st.integers(0, 3 * H), st.integers(1, 2 * H)), min_size=1, max_size=3)

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fill(store: SeriesStore, evs, cover) -> None:
    for start, length in cover:
        store.record_coverage(T0 + start, T0 + min(start + length, 3 * H))
    store.record_many([(T0 + s, m, e, v) for s, m, e, v in evs], mark_coverage=False)


def _table(store: SeriesStore, table: str) -> dict[tuple[str, str, int], tuple[float, int, float | None]]:
    out = {}
    for metric in METRICS:
        for entity in ENTITIES:
            for g_start, _ in store.query(metric, entity, T0, T0 + 4 * H, table).rows:
                row = store._db.execute(
                    f"SELECT v_sum, v_count, v_max FROM {table} t JOIN metrics m ON m.id = t.metric_id "
                    "JOIN entities e ON e.id = t.entity_id WHERE m.name = ? AND e.name = ? AND t.start = ?",
                    (metric, entity, g_start),
                ).fetchone()
                out[(metric, entity, g_start)] = row
    return out


@PROPERTY
@given(evs=events, cover=spans)
def test_hour_rows_equal_their_minute_rows(evs, cover):
    with SeriesStore(":memory:", lateness_s=0) as store:
        _fill(store, evs, cover)
        store.rollup(T0 + 4 * H)
        minutes = _table(store, "minute")
        hours = _table(store, "hour")
        for (metric, entity, hour), (h_sum, h_count, h_max) in hours.items():
            inside = [
                v for (m, e, t), v in minutes.items() if m == metric and e == entity and hour <= t < hour + H
            ]
            assert inside, "an hour row needs minute rows"
            assert h_sum == sum(v[0] for v in inside)  # occurrences: SUM
            assert h_count == sum(v[1] for v in inside)  # durations: exact AVG = sum / count
            assert h_max == max(v[2] for v in inside)  # states: MAX
        # Exposed values follow the kind.
        for metric in METRICS:
            for entity in ENTITIES:
                for hour, value in store.query(metric, entity, T0, T0 + 4 * H, "hour").rows:
                    h_sum, h_count, h_max = hours[(metric, entity, hour)]
                    expected = {"bytes_in": h_sum, "backends_failed": h_max}.get(
                        metric, h_sum / max(h_count, 1)
                    )
                    assert math.isclose(value, expected)


@PROPERTY
@given(evs=events, cover=spans)
def test_minute_rows_equal_the_events_of_complete_minutes(evs, cover):
    with SeriesStore(":memory:", lateness_s=0) as store:
        _fill(store, evs, cover)
        store.rollup(T0 + 4 * H)
        coverage = store.coverage()
        expected: dict[tuple[str, str, int], list[int]] = {}
        for second, metric, entity, value in evs:
            minute = T0 + second - second % 60
            if any(lo <= minute and minute + 60 <= hi for lo, hi in coverage):
                expected.setdefault((metric, entity, minute), []).append(value)
        got = _table(store, "minute")
        assert set(got) == set(expected)
        for key, values in expected.items():
            assert got[key] == (sum(values), len(values), max(values))


@PROPERTY
@given(evs=events, cover=spans, nows=st.lists(st.integers(0, 4 * H), max_size=6))
def test_rolling_up_in_steps_equals_rolling_up_once(evs, cover, nows):
    with SeriesStore(":memory:", lateness_s=0) as once, SeriesStore(":memory:", lateness_s=0) as steps:
        for store in (once, steps):
            _fill(store, evs, cover)
        once.rollup(T0 + 4 * H)
        for now in sorted(nows):
            steps.rollup(T0 + now)
        steps.rollup(T0 + 4 * H)
        assert steps.rollup(T0 + 4 * H) == 0
        for table in ("minute", "hour"):
            assert _table(once, table) == _table(steps, table)


@settings(max_examples=10, deadline=None)
@given(
    zone=st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York", "America/St_Johns"]),
    day_offset=st.integers(0, 400),
    per_hour=st.lists(st.integers(0, 50), min_size=80, max_size=80),
)
def test_day_rows_equal_their_hour_rows(zone, day_offset, per_hour):
    start = T0 - 120 * 86_400 + day_offset * 86_400  # sweeps across both DST changes of a year
    with SeriesStore(":memory:", time_zone=zone, lateness_s=0) as store:
        store.record_coverage(start, start + 80 * H)
        store.record_many(
            [(start + i * H + 1800, "bytes_out", "p", v) for i, v in enumerate(per_hour)], mark_coverage=False
        )
        store.rollup(start + 80 * H)
        hours = dict(store.query("bytes_out", "p", start, start + 80 * H, "hour").rows)
        day_rows = store._db.execute("SELECT start, end, v_sum FROM day ORDER BY start").fetchall()
        assert len(day_rows) >= 2
        for lo, hi, total in day_rows:
            assert (hi - lo) // H in (23, 24, 25) and lo % H == 0
            assert total == sum(v for t, v in hours.items() if lo <= t < hi)
        for (_, hi, _), (lo, _, _) in itertools.pairwise(day_rows):
            assert hi == lo  # days tile the time line
