from __future__ import annotations

from array import array

from model.learner.collector import Collector


def snap(ts, accepted, closed, active, b_in, b_out, msgs, conns, ended=(), down=0, failures=0):
    ids = array("q", [c[0] for c in conns])
    return {
        "ts": ts,
        "listeners": {"front": [accepted, closed, active, b_in, b_out, 0, 0, msgs]},
        "servers": {"game/s1": [active, accepted, failures, down]},
        "conns": {
            "id": ids.tobytes(),
            "bytes_in": array("q", [c[1] for c in conns]).tobytes(),
            "bytes_out": array("q", [c[2] for c in conns]).tobytes(),
            "msgs_in": array("q", [c[3] for c in conns]).tobytes(),
            "msgs_out": array("q", [c[4] for c in conns]).tobytes(),
            "started": array("d", [0.0] * len(conns)).tobytes(),
        },
        "ended": list(ended),
    }


def test_first_snapshot_is_a_baseline_then_differences() -> None:
    c = Collector()
    rows = c.ingest(snap(100.0, 5, 3, 2, 1000, 2000, 40, [(1, 10, 20, 1, 1), (2, 0, 0, 0, 0)]))
    assert rows.values[("sessions_connected", "front")] == 2
    assert ("sessions_started", "front") not in rows.values  # no difference without a previous snapshot
    assert list(rows.conn_msgs) == [2, 0]
    rows = c.ingest(
        snap(101.0, 7, 4, 3, 1500, 2600, 50, [(1, 15, 25, 2, 2), (3, 1, 1, 1, 0)], ended=[[2, 90.0, 100.5, "client_closed", 0, 0, "front", "game/s1"]], down=1, failures=2)
    )
    v = rows.values
    assert v[("sessions_started", "front")] == 2
    assert v[("bytes_in", "front")] == 500 and v[("bytes_out", "front")] == 600
    assert v[("frames_in", "front")] == 10 and rows.total_msgs == 10
    assert v[("backends_failed", "game")] == 1
    assert v[("connection_failures", "game/s1")] == 2
    assert v[("session_duration_s", "front")] == (10.5, 1)
    assert rows.sessions == [("front", "2", 90.0, 100.5)]
    assert list(rows.conn_msgs) == [2, 1]  # conn 1: 4-2; conn 3 is new: all of it
    assert list(rows.conn_bytes) == [10, 2]
    assert rows.ended_ids == [2]


def test_counters_going_backwards_are_a_new_baseline() -> None:
    c = Collector()
    c.ingest(snap(1.0, 100, 90, 10, 10_000, 10_000, 500, []))
    rows = c.ingest(snap(2.0, 3, 1, 2, 50, 60, 7, []))  # the proxy restarted
    assert rows.values[("sessions_started", "front")] == 3
    assert rows.values[("bytes_in", "front")] == 50
    assert all(not isinstance(x, int) or x >= 0 for x in rows.values.values())
