from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.balancers import (
    ConsistentHashBalancer,
    LeastConnBalancer,
    RoundRobinBalancer,
    capacity,
    make_balancer,
)
from proxy.core.hashing import key_hash

KEYS = [key_hash(f"10.0.{i // 256}.{i % 256}") for i in range(3000)]


def place(bal: ConsistentHashBalancer) -> dict[int, str]:
    return {k: bal.lookup(k) for k in KEYS}


def test_capacity_formula() -> None:
    assert capacity(0, 4, 1.25) == 1
    assert capacity(99, 4, 1.25) == 32  # ceil(1.25 * 100 / 4)
    assert capacity(10, 0, 1.25) == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.data())
def test_removing_a_server_moves_only_its_clients(n: int, data) -> None:
    bal = ConsistentHashBalancer()
    names = [f"s{i}" for i in range(n)]
    for name in names:
        bal.add(name)
    before = place(bal)
    victim = data.draw(st.sampled_from(names))
    bal.remove(victim)
    after = place(bal)
    assert all(after[k] == before[k] for k in KEYS if before[k] != victim)
    assert all(after[k] != victim for k in KEYS)


def test_adding_a_server_moves_about_one_in_n_plus_one_to_it() -> None:
    bal = ConsistentHashBalancer()
    for i in range(5):
        bal.add(f"s{i}")
    before = place(bal)
    bal.add("new")
    after = place(bal)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "new" for k in moved)
    assert abs(len(moved) - len(KEYS) / 6) < 0.2 * len(KEYS) / 6


def test_bounded_load_cap_holds_under_churn() -> None:
    rng = random.Random(5)
    bal = ConsistentHashBalancer(balance_factor=1.25)
    for i in range(6):
        bal.add(f"s{i}")
    load: dict[str, int] = {}
    live: list[str] = []
    for _step in range(3000):
        if live and rng.random() < 0.4:
            victim = live.pop(rng.randrange(len(live)))
            load[victim] -= 1
            continue
        # Skewed keys: a few hot clients open many connections.
        key = KEYS[int(rng.paretovariate(1.2)) % 50]
        total = sum(load.values())
        name = bal.pick(key, load)
        assert name is not None
        assert load.get(name, 0) < capacity(total, 6, 1.25)
        load[name] = load.get(name, 0) + 1
        live.append(name)


def test_pick_prefers_the_hash_choice_when_not_full() -> None:
    bal = ConsistentHashBalancer()
    for i in range(4):
        bal.add(f"s{i}")
    assert all(bal.pick(k, {}) == bal.lookup(k) for k in KEYS[:200])


def test_excluded_members_are_never_returned() -> None:
    bal = ConsistentHashBalancer()
    for i in range(3):
        bal.add(f"s{i}")
    for k in KEYS[:300]:
        assert bal.pick(k, {}, exclude={bal.lookup(k)}) not in (None, bal.lookup(k))
    assert bal.pick(KEYS[0], {}, exclude={"s0", "s1", "s2"}) is None
    assert ConsistentHashBalancer().pick(KEYS[0], {}) is None


def test_two_instances_agree() -> None:
    a, b = ConsistentHashBalancer(), ConsistentHashBalancer()
    for bal in (a, b):
        for name in ("x", "y", "z", "w"):
            bal.add(name)
        bal.remove("y")
        bal.add("v")
    load = {"x": 3, "z": 1}
    assert [a.pick(k, load) for k in KEYS[:500]] == [b.pick(k, load) for k in KEYS[:500]]


def test_round_robin_rotates_and_skips_excluded() -> None:
    bal = RoundRobinBalancer()
    for name in ("a", "b", "c"):
        bal.add(name)
    assert [bal.pick(0, {}) for _ in range(4)] == ["a", "b", "c", "a"]
    assert bal.pick(0, {}, exclude={"b"}) == "c"
    bal.remove("a")
    assert bal.pick(0, {}, exclude={"b", "c"}) is None


def test_least_conn_picks_fewest_and_rotates_ties() -> None:
    bal = LeastConnBalancer()
    for name in ("a", "b", "c"):
        bal.add(name)
    assert bal.pick(0, {"a": 3, "b": 1, "c": 2}) == "b"
    assert bal.pick(0, {"a": 3, "b": 1, "c": 2}, exclude={"b"}) == "c"
    ties = {bal.pick(0, {}) for _ in range(3)}
    assert ties == {"a", "b", "c"}


def test_make_balancer() -> None:
    assert make_balancer("least_conn").name == "least_conn"
    with pytest.raises(ValueError):
        make_balancer("random")
