from __future__ import annotations

from proxy.core.hashing import key_hash
from proxy.core.pool import AdminState, PoolState, ServerSpec


def make_pool(n: int = 3, **kw) -> PoolState:
    return PoolState("p", [ServerSpec(f"s{i}", "127.0.0.1", 9000 + i) for i in range(1, n + 1)], **kw)


def test_only_ready_and_up_servers_take_connections() -> None:
    pool = make_pool(3, fall=1)
    pool.set_admin_state("s1", AdminState.DRAIN)
    pool.set_admin_state("s2", AdminState.MAINT)
    picks = {pool.pick(key_hash(f"10.0.0.{i}")).name for i in range(200)}
    assert picks == {"s3"}
    pool.observe_health("s3", False, "check: refused")
    assert pool.pick(key_hash("10.0.0.1")) is None


def test_drain_moves_only_that_servers_keys_and_ready_restores_them() -> None:
    pool = make_pool(4)
    keys = [key_hash(f"client-{i}") for i in range(2000)]
    before = {k: pool.pick(k).name for k in keys}
    pool.set_admin_state("s2", AdminState.DRAIN)
    during = {k: pool.pick(k).name for k in keys}
    moved = [k for k in keys if before[k] != during[k]]
    assert moved and all(before[k] == "s2" for k in moved)
    pool.set_admin_state("s2", AdminState.READY)
    assert {k: pool.pick(k).name for k in keys} == before


def test_acquire_release_track_load_and_bytes() -> None:
    pool = make_pool(2)
    s = pool.servers["s1"]
    pool.acquire(s)
    pool.acquire(s)
    assert pool.active(s) == 2 and s.conns_total == 2
    pool.release(s, 10, 20)
    assert pool.active(s) == 1 and (s.bytes_in_total, s.bytes_out_total) == (10, 20)


def test_reconfigure_keeps_runtime_state_and_retires_removed_servers() -> None:
    pool = make_pool(3)
    pool.set_admin_state("s1", AdminState.MAINT)
    s3 = pool.servers["s3"]
    pool.acquire(s3)
    specs = [
        ServerSpec("s1", "127.0.0.1", 9001),
        ServerSpec("s2", "127.0.0.1", 9002),
        ServerSpec("s4", "127.0.0.1", 9004),
    ]
    pool.reconfigure(specs, balance="consistent", balance_factor=1.25, rise=2, fall=3)
    assert pool.servers["s1"].admin is AdminState.MAINT  # operator's change survives the reload
    assert "s4" in pool.servers and "s3" not in pool.servers
    assert s3.retired and not s3.eligible
    assert {pool.pick(key_hash(str(i))).name for i in range(300)} == {"s2", "s4"}
    pool.release(s3, 1, 1)  # its last connection ends: it is gone for good
    assert s3.name not in pool.servers and s3.name not in pool.load


def test_address_change_is_a_new_server() -> None:
    pool = make_pool(2)
    old = pool.servers["s1"]
    pool.reconfigure(
        [ServerSpec("s1", "127.0.0.1", 9999), ServerSpec("s2", "127.0.0.1", 9002)],
        balance="consistent",
        balance_factor=1.25,
        rise=2,
        fall=3,
    )
    assert pool.servers["s1"] is not old and pool.servers["s1"].port == 9999


def test_bounded_load_cap_holds_for_same_key() -> None:
    pool = make_pool(4, balance_factor=1.25)
    key = key_hash("one-very-popular-client")
    for _ in range(100):
        pool.acquire(pool.pick(key))
    # cap = ceil(1.25 * total / n): nobody may exceed ceil(1.25 * 100 / 4) = 32
    assert max(pool.load.values()) <= 32
