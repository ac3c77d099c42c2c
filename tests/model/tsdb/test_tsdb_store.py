"""The store's API: the catalog, validation, snapshots as one transaction, settings, coverage, /series."""

from __future__ import annotations

import math
import sqlite3

import pytest

from model.tsdb import (
    BUILTIN_METRICS,
    Kind,
    MetricConflict,
    SeriesStore,
    StoreSettingsMismatch,
    UnknownMetric,
    series_response,
)

H = 3600


def test_builtin_metrics_and_kinds():
    kinds = {spec.name: spec.kind for spec in BUILTIN_METRICS}
    assert kinds["sessions_connected"] is Kind.STATE
    assert kinds["backends_failed"] is Kind.STATE
    for name in (
        "sessions_started",
        "connection_failures",
        "bytes_in",
        "bytes_out",
        "frames_in",
        "frames_out",
        "errors",
    ):
        assert kinds[name] is Kind.OCCURRENCE
    assert kinds["connect_duration_s"] is Kind.DURATION
    assert kinds["session_duration_s"] is Kind.DURATION
    assert len(kinds) == len(BUILTIN_METRICS)  # declared once


def test_unknown_metric_is_rejected_unless_registered(make_store, t0):
    store = make_store()
    with pytest.raises(UnknownMetric, match=r"unknown metric 'login_requests'.*register"):
        store.record(t0, "login_requests", "s1", 1)
    spec = store.register_metric("login_requests", Kind.OCCURRENCE, unit="requests", help="Logins.")
    assert spec.kind is Kind.OCCURRENCE
    store.record(t0, "login_requests", "s1", 1)
    assert store.register_metric("login_requests", "occurrence").name == "login_requests"  # idempotent
    with pytest.raises(MetricConflict, match="already a occurrence metric"):
        store.register_metric("login_requests", Kind.STATE)
    with pytest.raises(ValueError, match="invalid metric name"):
        store.register_metric("Bad Name", Kind.STATE)


def test_registered_metrics_persist(tmp_path, t0):
    path = tmp_path / "m.db"
    with SeriesStore(path) as store:
        store.register_metric("queue_wait_s", Kind.DURATION)
    with SeriesStore(path) as store:
        store.record(t0, "queue_wait_s", "q", 0.5)
        assert store.catalog.get("queue_wait_s").kind is Kind.DURATION


def test_snapshot_is_one_transaction_and_all_or_nothing(make_store, t0):
    store = make_store()
    with pytest.raises(UnknownMetric):
        store.record_snapshot(t0, {("bytes_in", "a"): 5, ("nope", "a"): 1})
    assert store.query("bytes_in", "a", t0, t0 + 60, "raw").rows == ()
    assert store.coverage() == []
    changes = store._db.total_changes
    assert store.record_snapshot(t0, {("bytes_in", "a"): 5, ("bytes_in", "b"): 6, ("errors", "a"): 0}) == 3
    assert store.query("bytes_in", "b", t0, t0 + 60, "raw").rows == ((t0, 6.0),)
    assert store._db.total_changes > changes
    assert store.coverage() == [(t0, t0 + 1)]


@pytest.mark.parametrize(
    ("metric", "value", "message"),
    [
        ("bytes_in", -1, "cannot be negative"),
        ("bytes_in", math.nan, "finite"),
        ("bytes_in", "12", "must be a number"),
        ("bytes_in", True, "must be a number"),
        ("connect_duration_s", (1.0, 1.5), "integer count"),
        ("connect_duration_s", (1.0, 2, 3), "pair"),
    ],
)
def test_bad_values_are_rejected(make_store, t0, metric, value, message):
    store = make_store()
    with pytest.raises(ValueError, match=message):
        store.record(t0, metric, "s", value)


def test_bad_entities_times_and_sessions_are_rejected(make_store, t0):
    store = make_store()
    with pytest.raises(ValueError, match="entity"):
        store.record(t0, "errors", "", 1)
    with pytest.raises(ValueError, match="epoch"):
        store.record(-1, "errors", "s", 1)
    with pytest.raises(ValueError, match="before it starts"):
        store.record_session("s", "k", t0 + 10, t0)
    store.record(t0, "backends_failed", "s", -2)  # a state may be any finite level


def test_several_events_in_one_interval_combine_by_kind(make_store, t0):
    store = make_store(interval_s=5)
    store.record_many([(t0 + 1, "bytes_in", "s", 10), (t0 + 4, "bytes_in", "s", 5)])
    store.record_many([(t0 + 1, "backends_failed", "s", 1), (t0 + 2, "backends_failed", "s", 3)])
    store.record_many([(t0, "connect_duration_s", "s", 1.0), (t0 + 3, "connect_duration_s", "s", (5.0, 3))])
    assert store.query("bytes_in", "s", t0, t0 + 5, "raw").rows == ((t0, 15.0),)
    assert store.query("backends_failed", "s", t0, t0 + 5, "raw").rows == ((t0, 3.0),)
    assert store.query("connect_duration_s", "s", t0, t0 + 5, "raw").rows == ((t0, 1.5),)


def test_record_session_updates_the_end(make_store, t0):
    store = make_store(lateness_s=0)
    store.record_coverage(t0, t0 + 300)
    store.record_session("s", "k", t0 + 10, None)
    store.record_session("s", "k", t0 + 10, t0 + 70)
    store.rollup(t0 + 300)
    rows = dict(store.query("sessions_connected", "s", t0, t0 + 300, "minute").rows)
    assert rows == {t0: 1.0, t0 + 60: 1.0}


def test_settings_mismatch_and_bad_settings(make_store):
    make_store("a.db", interval_s=5).close()
    with pytest.raises(StoreSettingsMismatch, match="interval_s=5"):
        make_store("a.db", interval_s=1)
    with pytest.raises(ValueError, match="divide a minute"):
        make_store("b.db", interval_s=7)


def test_wal_and_synchronous_normal(make_store):
    store = make_store()
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_second_connection_reads_while_the_store_is_open(make_store, tmp_path, t0):
    store = make_store("shared.db")
    store.record(t0, "errors", "s", 4)
    reader = SeriesStore(tmp_path / "shared.db")
    try:
        assert reader.query("errors", "s", t0, t0 + 60, "raw").rows == ((t0, 4.0),)
    finally:
        reader.close()


def test_coverage_spans_merge_out_of_order(make_store, t0):
    store = make_store()  # intervals of 1 s, holes up to 2 s bridged
    store.record_coverage(t0 + 100, t0 + 200)
    store.record_coverage(t0, t0 + 50)
    store.record_coverage(t0 + 300, t0 + 400)
    assert store.coverage() == [(t0, t0 + 50), (t0 + 100, t0 + 200), (t0 + 300, t0 + 400)]
    store.record_coverage(t0 + 52, t0 + 99)  # bridges both neighbours within the tolerance
    assert store.coverage() == [(t0, t0 + 200), (t0 + 300, t0 + 400)]
    rows = store._db.execute("SELECT start, end FROM coverage ORDER BY start").fetchall()
    assert rows == store.coverage()


def test_failed_write_leaves_no_trace(make_store, t0, monkeypatch):
    store = make_store()
    store.record(t0, "errors", "known", 1)

    def boom(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_cover", boom)
    with pytest.raises(sqlite3.OperationalError):
        store.record(t0 + 1, "errors", "new-entity", 1)
    monkeypatch.undo()
    assert store.entities() == ["known"]
    assert store.query("errors", "new-entity", t0, t0 + 60, "raw").rows == ()


# -- GET /series ---------------------------------------------------------------------------------------


@pytest.fixture
def api_store(make_store, t0, tick):
    store = make_store(lateness_s=0)
    tick(store, t0, t0 + 180, {("bytes_in", "game/s1"): 2})
    store.rollup(t0 + 180)
    return store


def test_series_response_ok_with_iso_and_epoch(api_store, t0):
    status, body = series_response(
        api_store,
        {"metric": "bytes_in", "entity": "game/s1", "from": "2024-03-04T00:00:00Z", "to": str(t0 + 180)},
    )
    assert status == 200
    assert body["granularity"] == "minute" and body["kind"] == "occurrence"
    assert [r["value"] for r in body["rows"]] == [120.0, 120.0, 120.0]
    assert body["rows"][0]["start"] == "2024-03-04T00:00:00Z" and body["rows"][0]["start_ts"] == t0
    assert body["note"] is None


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"metric": "bytes_in", "entity": "game/s1", "from": "0"}, 400, "missing query parameter(s): to"),
        ({"metric": "bytes_in", "entity": "game/s1", "from": "soon", "to": "1"}, 400, "not an ISO-8601"),
        ({"metric": "bytes_in", "entity": "game/s1", "from": "20", "to": "10"}, 400, "later than"),
        ({"metric": "bogus", "entity": "game/s1", "from": "0", "to": "10"}, 404, "unknown metric"),
        (
            {"metric": "bytes_in", "entity": "s", "from": "0", "to": "10", "granularity": "week"},
            400,
            "granularity",
        ),
        (
            {"metric": "bytes_in", "entity": "s", "from": "0", "to": str(30 * 86_400), "granularity": "raw"},
            400,
            "coarser",
        ),
    ],
)
def test_series_response_errors(api_store, params, status, fragment):
    got_status, body = series_response(api_store, params)
    assert got_status == status
    assert fragment in body["error"]
