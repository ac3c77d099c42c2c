"""The sessionizer alone (sans-IO): records in, counters out, with a fake clock of integers."""

from __future__ import annotations

from model.usage.sessionize import EXPIRY_MARGIN_S, Sessionizer

S = 1_000_000  # one second in microseconds
T0 = 1_794_268_800 * S  # 2026-11-10T00:00:00Z


def rec(
    t_s: float, key: str = "k", client_id: str | None = None, resource: str = "r", count: int = 1
) -> tuple:
    return (T0 + round(t_s * S), key, client_id, "10.0.0.1", resource, count, 0, 0, 0)


def test_out_of_order_records_continue_their_session() -> None:
    sz = Sessionizer(1800, 30)
    sz.add(*rec(100))
    sz.add(*rec(200, resource="x"))
    sz.add(*rec(150, resource="x"))  # written late: 50 s before the latest record, a double click
    sz.add(*rec(1990))  # 1790 s after the latest (200): same session, even though 1890 after 100
    assert sz.finish(T0 + 86_400 * S, carry=True) == []
    assert (sz.started, sz.ended) == (1, 1)
    assert sz.clients == {"10.0.0.1": {"r": [2, 0, 0, 0, 0, 1], "x": [1, 1, 0, 0, 0, 1]}}


def test_expiry_waits_for_timeout_plus_margin() -> None:
    sz = Sessionizer(1800, 30)
    sz.add(*rec(0, key="a"))
    assert sz.expire(T0 + (1800 + EXPIRY_MARGIN_S - 1) * S) == 0  # a late line may still come
    assert sz.expire(T0 + (1800 + EXPIRY_MARGIN_S) * S) == 1
    assert sz.open_count == 0 and sz.clients == {"10.0.0.1": {"r": [1, 0, 0, 0, 0, 1]}}


def test_the_client_is_the_latest_id_and_carrying_keeps_partial_counts() -> None:
    sz = Sessionizer(1800, 30)
    sz.add(*rec(86_000, client_id=None))
    sz.add(*rec(86_100, client_id="alice"))
    sz.add(*rec(86_200, client_id=None))  # no id on this line: still alice's session
    carried = sz.finish(T0 + 86_400 * S, carry=True)
    assert [(o.key, o.client, o.resources["r"][:2]) for o in carried] == [("k", "alice", (3, 0))]
    assert (sz.started, sz.carried, sz.clients) == (1, 1, {})
    nxt = Sessionizer(1800, 30)
    nxt.restore(carried)
    nxt.add(*rec(86_400 + 10))  # 210 s after the carried last access: same session
    nxt.finish(T0 + 2 * 86_400 * S, carry=True)
    assert (nxt.restored, nxt.started, nxt.ended) == (1, 0, 1)
    assert nxt.clients == {"alice": {"r": [4, 0, 0, 0, 0, 1]}}
    assert nxt.ips == {"10.0.0.1": [4, 0]}
