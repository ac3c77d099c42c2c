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

KEYS = [key_hash(f"10.0.{i // 256}.{i % 256}") for i in range(20_000)]
FEW_KEYS = KEYS[:1500]


def place(bal: ConsistentHashBalancer, keys: list[int] = FEW_KEYS) -> list[str | None]:
    return [bal.lookup(k) for k in keys]


def consistent(*names: str, c: float = 1.25) -> ConsistentHashBalancer:
    bal = ConsistentHashBalancer(balance_factor=c)
    for name in names:
        bal.add(name)
    return bal


def test_capacity_formula() -> None:
    assert capacity(0, 4, 1.25) == 1
    assert capacity(99, 4, 1.25) == 32  # ceil(1.25 * 100 / 4)
    assert capacity(7, 4, 1.0) == 2  # ceil(8 / 4): exact division does not round up
    assert capacity(8, 4, 1.0) == 3
    assert capacity(10, 0, 1.25) == 0


# -- consistent: placement ----------------------------------------------------------------------

# Ops on a pool of names: (True, i) adds a name not yet a member, (False, i) removes a member.
OPS = st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=14)


def apply(bal: ConsistentHashBalancer, is_add: bool, pick: int, counter: list[int]) -> tuple[str, str]:
    members = bal.members
    if is_add or len(members) <= 1:
        counter[0] += 1
        name = f"s{counter[0]}"
        bal.add(name)
        return "add", name
    name = members[pick % len(members)]
    bal.remove(name)
    return "remove", name


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), OPS)
def test_membership_changes_move_only_the_keys_they_must(start: int, ops) -> None:
    bal = consistent(*(f"s{i}" for i in range(start)))
    counter = [start]
    before = place(bal)
    for is_add, pick in ops:
        kind, name = apply(bal, is_add, pick, counter)
        after = place(bal)
        if kind == "add":
            assert all(b == a or b == name for a, b in zip(before, after, strict=True))
        else:
            assert all(b == a if a != name else b != name for a, b in zip(before, after, strict=True))
        assert set(after) <= set(bal.members)
        before = after


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), OPS)
def test_two_instances_fed_the_same_changes_agree(start: int, ops) -> None:
    a = consistent(*(f"s{i}" for i in range(start)))
    b = consistent(*(f"s{i}" for i in range(start)))
    ca, cb = [start], [start]
    for is_add, pick in ops:
        apply(a, is_add, pick, ca)
        apply(b, is_add, pick, cb)
    assert a.members == b.members
    assert place(a) == place(b)
    load = {name: i for i, name in enumerate(a.members)}
    exclude = set(a.members[:1])
    assert [a.pick(k, load, exclude) for k in FEW_KEYS[:300]] == [
        b.pick(k, load, exclude) for k in FEW_KEYS[:300]
    ]


@pytest.mark.parametrize("n", [3, 9])
def test_adding_a_server_moves_about_one_in_n_plus_one_all_to_it(n: int) -> None:
    bal = consistent(*(f"s{i}" for i in range(n)))
    before = place(bal, KEYS)
    bal.add("new")
    after = place(bal, KEYS)
    moved = [b for a, b in zip(before, after, strict=True) if a != b]
    assert set(moved) == {"new"}
    p = 1 / (n + 1)
    assert abs(len(moved) - len(KEYS) * p) < 5 * (len(KEYS) * p * (1 - p)) ** 0.5


def test_a_returning_server_gets_its_keys_back() -> None:
    bal = consistent("a", "b", "c", "d")
    before = place(bal)
    bal.remove("b")
    bal.add("b")
    assert place(bal) == before


def test_lookup_with_no_members() -> None:
    bal = consistent("a")
    bal.remove("a")
    assert bal.lookup(KEYS[0]) is None
    assert bal.pick(KEYS[0], {}) is None
    assert bal.members == ()


# -- consistent: bounded load -------------------------------------------------------------------


def test_pick_is_the_hash_choice_while_below_the_cap() -> None:
    bal = consistent("s0", "s1", "s2", "s3")
    assert all(bal.pick(k, {}) == bal.lookup(k) for k in FEW_KEYS[:300])
    # Members not in the pool's load (or loads of non-members) change nothing.
    assert all(bal.pick(k, {"gone": 10**6}) == bal.lookup(k) for k in FEW_KEYS[:300])


@pytest.mark.parametrize("c", [1.0, 1.1, 1.25, 2.0])
def test_bounded_load_cap_holds_under_churn(c: float) -> None:
    rng = random.Random(5)
    names = [f"s{i}" for i in range(6)]
    bal = consistent(*names, c=c)
    load = dict.fromkeys(names, 0)
    live: list[str] = []
    for _step in range(3000):
        if live and rng.random() < 0.4:
            load[live.pop(rng.randrange(len(live)))] -= 1
            continue
        # Skewed keys: a few hot clients open most connections.
        key = KEYS[int(rng.paretovariate(1.2)) % 50]
        cap = capacity(sum(load.values()), 6, c)
        name = bal.pick(key, load)
        assert name is not None
        load[name] += 1
        assert load[name] <= cap
        live.append(name)


def test_one_hot_key_spreads_over_every_member_within_the_cap() -> None:
    bal = consistent("s0", "s1", "s2", "s3")
    load = dict.fromkeys(bal.members, 0)
    for _ in range(100):
        load[bal.pick(KEYS[0], load)] += 1
    assert max(load.values()) <= capacity(99, 4, 1.25)
    assert min(load.values()) > 0


def test_excluded_members_are_never_returned() -> None:
    rng = random.Random(9)
    names = [f"s{i}" for i in range(5)]
    bal = consistent(*names)
    load = dict.fromkeys(names, 0)
    for _ in range(2000):
        key = KEYS[rng.randrange(200)]
        exclude = set(rng.sample(names, rng.randrange(4)))
        cap = capacity(sum(load.values()), 5, 1.25)
        name = bal.pick(key, load, exclude)
        assert name is not None and name not in exclude
        if load[name] >= cap:
            # Over the cap only when every eligible member is already full.
            assert all(load[m] >= cap for m in names if m not in exclude)
        load[name] += 1
    assert bal.pick(KEYS[0], {}, exclude=set(names)) is None


def test_the_first_candidate_excluded_goes_elsewhere() -> None:
    bal = consistent("s0", "s1", "s2")
    for k in FEW_KEYS[:300]:
        first = bal.lookup(k)
        assert bal.pick(k, {}, exclude={first}) not in (None, first)


def test_bad_balance_factor_and_membership_errors() -> None:
    with pytest.raises(ValueError):
        ConsistentHashBalancer(balance_factor=0.9)
    bal = consistent("a")
    with pytest.raises(ValueError):
        bal.add("a")
    with pytest.raises(KeyError):
        bal.remove("b")


# -- round robin ----------------------------------------------------------------------------------


def test_round_robin_rotates_ignoring_key_and_load() -> None:
    bal = RoundRobinBalancer()
    for name in ("a", "b", "c"):
        bal.add(name)
    assert [bal.pick(k, {"a": 100}) for k in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_skips_excluded_and_continues_after_the_pick() -> None:
    bal = RoundRobinBalancer()
    for name in ("a", "b", "c", "d"):
        bal.add(name)
    assert bal.pick(0, {}, exclude={"a", "b"}) == "c"
    assert bal.pick(0, {}) == "d"
    assert bal.pick(0, {}, exclude={"a", "b", "c", "d"}) is None
    assert bal.pick(0, {}) == "a"


def test_round_robin_membership_changes_keep_the_rotation() -> None:
    bal = RoundRobinBalancer()
    for name in ("a", "b", "c", "d"):
        bal.add(name)
    assert [bal.pick(0, {}) for _ in range(2)] == ["a", "b"]
    bal.remove("a")  # before the next one: "c" is still next
    assert bal.pick(0, {}) == "c"
    bal.remove("d")  # the next one itself: its successor (wrapping) is next
    assert bal.pick(0, {}) == "b"
    bal.add("e")
    assert [bal.pick(0, {}) for _ in range(3)] == ["c", "e", "b"]
    with pytest.raises(KeyError):
        bal.remove("zz")
    with pytest.raises(ValueError):
        bal.add("b")
    assert RoundRobinBalancer().pick(0, {}) is None


# -- least connections ---------------------------------------------------------------------------


def test_least_conn_picks_fewest_and_skips_excluded() -> None:
    bal = LeastConnBalancer()
    for name in ("a", "b", "c"):
        bal.add(name)
    assert bal.pick(0, {"a": 3, "b": 1, "c": 2}) == "b"
    assert bal.pick(0, {"a": 3, "b": 1, "c": 2}, exclude={"b"}) == "c"
    assert bal.pick(0, {"a": 3, "b": 1}) == "c"  # missing means 0
    assert bal.pick(0, {"a": 1, "b": 1, "c": 1, "x": 0}) != "x"  # only members
    assert bal.pick(0, {}, exclude={"a", "b", "c"}) is None
    assert LeastConnBalancer().pick(0, {}) is None


def test_least_conn_rotates_ties() -> None:
    bal = LeastConnBalancer()
    for name in ("a", "b", "c"):
        bal.add(name)
    assert [bal.pick(0, {}) for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    # Ties among the least loaded only: "b" never wins while it has more.
    picks = [bal.pick(0, {"a": 1, "b": 2, "c": 1}) for _ in range(4)]
    assert set(picks) == {"a", "c"}
    bal.remove("a")
    with pytest.raises(KeyError):
        bal.remove("a")


def test_least_conn_follows_load_as_it_changes() -> None:
    bal = LeastConnBalancer()
    for name in ("a", "b", "c"):
        bal.add(name)
    load = {"a": 0, "b": 0, "c": 0}
    for _ in range(30):
        load[bal.pick(0, load)] += 1
    assert load == {"a": 10, "b": 10, "c": 10}


# -- factory -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,cls",
    [
        ("consistent", ConsistentHashBalancer),
        ("round_robin", RoundRobinBalancer),
        ("least_conn", LeastConnBalancer),
    ],
)
def test_make_balancer(name: str, cls: type) -> None:
    bal = make_balancer(name, balance_factor=1.5)
    assert type(bal) is cls and bal.name == name and bal.members == ()


def test_make_balancer_passes_the_balance_factor_and_rejects_unknown_names() -> None:
    assert make_balancer("consistent", balance_factor=1.5).balance_factor == 1.5
    with pytest.raises(ValueError, match="round_robin"):
        make_balancer("random")
