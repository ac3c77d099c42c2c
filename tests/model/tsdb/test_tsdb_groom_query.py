"""Retention at its exact edges, forgetting entities, granularity by span and the notes queries carry."""

from __future__ import annotations

import pytest

from model.tsdb import Granularity, Retention, granularity_for_span

H = 3600
D = 86_400


def rows(store, metric, entity, start, end, g):
    return dict(store.query(metric, entity, start, end, g).rows)


@pytest.fixture
def filled(make_store, t0):
    """Two complete UTC days of one occurrence per minute for entity "s1", rolled up."""
    store = make_store(lateness_s=0)
    store.record_coverage(t0, t0 + 2 * D)
    store.record_many([(t0 + m * 60, "frames_in", "s1", 1) for m in range(2 * 1440)])
    assert store.rollup(t0 + 2 * D) > 0
    return store


def test_raw_retention_edge(filled, t0):
    filled.groom(t0 + 7 * D + 60)  # cutoff = t0 + 60: the row starting exactly there stays
    raw = rows(filled, "frames_in", "s1", t0, t0 + 180, "raw")
    assert sorted(raw) == [t0 + 60, t0 + 120]
    filled.groom(t0 + 7 * D + 61)
    assert sorted(rows(filled, "frames_in", "s1", t0, t0 + 180, "raw")) == [t0 + 120]


def test_minute_retention_edge(filled, t0):
    filled.groom(t0 + 3 * D + 60)
    assert sorted(rows(filled, "frames_in", "s1", t0, t0 + 180, "minute")) == [t0 + 60, t0 + 120]
    filled.groom(t0 + 3 * D + 61)
    assert sorted(rows(filled, "frames_in", "s1", t0, t0 + 180, "minute")) == [t0 + 120]


def test_hour_and_day_retention_edges(filled, t0):
    filled.groom(t0 + 32 * D + H)
    assert sorted(rows(filled, "frames_in", "s1", t0, t0 + 3 * H, "hour")) == [t0 + H, t0 + 2 * H]
    filled.groom(t0 + 32 * D + H + 1)
    assert sorted(rows(filled, "frames_in", "s1", t0, t0 + 3 * H, "hour")) == [t0 + 2 * H]
    assert rows(filled, "frames_in", "s1", t0, t0 + 2 * D, "day") == {t0: 1440.0, t0 + D: 1440.0}
    filled.groom(t0 + 90 * D)
    assert rows(filled, "frames_in", "s1", t0, t0 + 2 * D, "day") == {t0: 1440.0, t0 + D: 1440.0}
    filled.groom(t0 + 90 * D + 1)
    assert rows(filled, "frames_in", "s1", t0, t0 + 2 * D, "day") == {t0 + D: 1440.0}


def test_sessions_are_kept_for_their_retention_after_they_end(make_store, t0):
    store = make_store(retention=Retention(session_days=2))
    store.record_session("s1", "ended", t0, t0 + 100)
    store.record_session("s1", "open", t0, None)
    store.groom(t0 + 100 + 2 * D)
    assert store._db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
    store.groom(t0 + 101 + 2 * D)
    assert store._db.execute("SELECT session_key FROM sessions").fetchall() == [("open",)]


def test_groom_returns_rows_deleted(filled, t0):
    assert filled.groom(t0) == 0
    # Raw cutoff at 2 days - 60 s: 2879 of 2880 raw rows go; minute cutoff at 6 days - 60 s: all 2880.
    assert filled.groom(t0 + 9 * D - 60) == 2879 + 2880


def test_forgotten_entity_rows_leave_by_their_own_retention(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0, t0 + D)
    for entity in ("old", "kept"):
        store.record_many([(t0 + m * 60, "bytes_out", entity, 2) for m in range(1440)])
    store.record_session("old", "still-open", t0 + 10, None)
    store.rollup(t0 + D)
    assert store.forget_entity("old", t0 + D)
    assert store.forget_entity("never-seen", t0 + D) is False
    assert store.entities() == ["kept"]
    # The open session was closed when the entity was removed.
    assert store._db.execute("SELECT end FROM sessions").fetchall() == [(t0 + D,)]
    # Nothing is purged early: history stays queryable until each table's retention passes.
    store.groom(t0 + D)
    assert rows(store, "bytes_out", "old", t0, t0 + D, "day") == {t0: 2880.0}
    store.groom(t0 + 4 * D)
    assert rows(store, "bytes_out", "old", t0, t0 + H, "minute") == {}
    assert len(rows(store, "bytes_out", "old", t0, t0 + D, "hour")) == 24
    store.groom(t0 + 91 * D)  # exactly the longest retention (90 days) since the removal: not yet
    assert store.entities(include_forgotten=True) == ["kept", "old"]
    store.groom(t0 + 91 * D + 1)
    assert store.entities(include_forgotten=True) == ["kept"]
    assert store.query("bytes_out", "old", t0, t0 + D, "day").rows == ()
    assert store._db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0


def test_data_after_removal_brings_an_entity_back(make_store, t0):
    store = make_store()
    store.record(t0, "errors", "s9", 1)
    store.forget_entity("s9", t0 + 100)
    store.record(t0 + 50, "errors", "s9", 1)  # from before the removal: still forgotten
    assert store.entities() == []
    store.record(t0 + 200, "errors", "s9", 1)
    assert store.entities() == ["s9"]


# -- granularity by span -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span_s", "expected"),
    [
        (60, Granularity.MINUTE),
        (H, Granularity.MINUTE),
        (H + 1, Granularity.HOUR),
        (31 * D, Granularity.HOUR),
        (31 * D + 1, Granularity.DAY),
    ],
)
def test_granularity_by_span_boundaries(span_s, expected):
    assert granularity_for_span(span_s) is expected


def test_query_picks_granularity_from_span_unless_asked(filled, t0):
    assert filled.query("frames_in", "s1", t0, t0 + H).granularity == "minute"
    assert filled.query("frames_in", "s1", t0, t0 + H + 1).granularity == "hour"
    assert filled.query("frames_in", "s1", t0, t0 + 31 * D).granularity == "hour"
    assert filled.query("frames_in", "s1", t0, t0 + 31 * D + 1).granularity == "day"
    assert filled.query("frames_in", "s1", t0, t0 + 31 * D + 1, "minute").granularity == "minute"
    # Rows overlap the range: an unaligned start still gets the hour it falls in.
    assert filled.query("frames_in", "s1", t0 + 1800, t0 + H + 1801).rows == ((t0, 60.0), (t0 + H, 60.0))


def test_asking_for_a_groomed_granularity_returns_no_rows_and_says_so(filled, t0):
    filled.groom(t0 + 5 * D)
    result = filled.query("frames_in", "s1", t0, t0 + H, "minute")
    assert result.rows == ()
    assert result.note is not None
    assert "minute rows older than 3 days were removed by retention" in result.note
    # Picked automatically, the query moves to hour rows and says why.
    auto = filled.query("frames_in", "s1", t0, t0 + H)
    assert auto.granularity == "hour"
    assert auto.rows == ((t0, 60.0),)
    assert auto.note is not None and "showing hour rows" in auto.note
    # Ranges inside retention carry no note about it.
    assert "retention" not in (filled.query("frames_in", "s1", t0 + D, t0 + D + H, "hour").note or "")


def test_query_notes_unsummarised_tail_and_unknown_entity(filled, t0):
    note = filled.query("frames_in", "s1", t0 + 2 * D - H, t0 + 2 * D + 60, "minute").note
    assert note == "minute intervals from 2024-03-06T00:00:00Z on are not summarised yet"
    unknown = filled.query("frames_in", "nobody", t0, t0 + H)
    assert unknown.rows == () and "no data recorded for entity 'nobody'" in (unknown.note or "")


def test_query_rejects_unknown_metric_and_bad_ranges(filled, t0):
    from model.tsdb import UnknownMetric

    with pytest.raises(UnknownMetric, match="unknown metric 'latency'"):
        filled.query("latency", "s1", t0, t0 + H)
    with pytest.raises(ValueError, match="later than"):
        filled.query("frames_in", "s1", t0 + H, t0)
    with pytest.raises(ValueError, match="granularity"):
        filled.query("frames_in", "s1", t0, t0 + H, "week")
