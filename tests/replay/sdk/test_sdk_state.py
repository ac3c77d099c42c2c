"""Change tracking of session state (sans-IO): deltas, versions, in-place changes, rollback."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.canonical import digest
from replay.envelope import Delta, EnvelopeError, Res, encode
from replay.sdk import MissingPartition, SessionFrozen, SessionState, StateError


def make(**parts: dict) -> SessionState:
    state = SessionState()
    for name, data in parts.items():
        state.load(name, 3, data)
    return state


def report(state: SessionState) -> dict[str, Delta]:
    deltas = state.collect()
    state.commit(deltas)
    return deltas


def test_writes_delta_contents() -> None:
    state = make(game={"a": 1, "b": 2, "c": 3})
    game = state["game"]
    game["a"] = 10
    game["a"] = 11
    game["new"] = "x"
    del game["b"]
    assert game.pop("c") == 3
    deltas = report(state)
    assert set(deltas) == {"game"}
    d = deltas["game"]
    assert d.version == 4 and d.data is None
    assert dict(d.set_) == {"a": 11, "new": "x"}
    assert sorted(d.delete) == ["b", "c"]
    assert state["game"].version == 4
    assert report(state) == {}  # nothing new: no delta, no version
    assert state["game"].version == 4


def test_reads_report_nothing() -> None:
    state = make(game={"n": 1, "items": [1, 2], "m": {"x": 1}})
    game = state["game"]
    assert game["n"] == 1 and game["items"] == [1, 2] and dict(game.items())["m"] == {"x": 1}
    assert list(game) == ["n", "items", "m"] and len(game) == 3 and "n" in game
    assert report(state) == {}
    assert game.version == 3


def test_in_place_changes_of_mutable_values_are_seen() -> None:
    state = make(cart={"items": ["a"], "meta": {"n": 1}, "same": [1]})
    cart = state["cart"]
    cart["items"].append("b")
    cart["meta"]["n"] += 1
    cart["same"].append(2)
    cart["same"].pop()  # changed and changed back: not reported
    deltas = report(state)
    assert dict(deltas["cart"].set_) == {"items": ["a", "b"], "meta": {"n": 2}}
    assert deltas["cart"].version == 4


def test_replacing_a_partition() -> None:
    state = make(auth={"user": "old", "role": "x"})
    state["auth"] = {"user": "ann"}
    d = report(state)["auth"]
    assert dict(d.set_) == {"user": "ann"} and d.delete == ("role",)
    assert state["auth"].to_dict() == {"user": "ann"}


def test_missing_partition_is_recorded_only_in_requests() -> None:
    state = make(game={})
    with pytest.raises(MissingPartition):
        state["cart"]
    assert state.missing == set()
    state.begin()
    with pytest.raises(MissingPartition) as info:
        state["cart"] = {"items": []}
    assert info.value.partition == "cart"
    try:
        state["auth"]
    except MissingPartition:
        pass  # a handler that swallows it does not hide it
    assert state.missing == {"cart", "auth"}
    assert "cart" not in state and list(state) == ["game"]
    with pytest.raises(ValueError):
        state["not a name"]


def test_rollback_restores_values_and_tracking() -> None:
    state = make(game={"a": 1, "items": [1], "gone": 5, "m": {"k": [1]}})
    state["game"]["a"] = 2  # outside a request: pending, must survive the rollback
    state.begin()
    game = state["game"]
    game["a"] = 3
    game["b"] = 4
    del game["gone"]
    game["items"].append(2)
    game["m"]["k"].append(2)
    game["m"] = {"replaced": True}
    state.rollback()
    assert state["game"].to_dict() == {"a": 2, "items": [1], "gone": 5, "m": {"k": [1]}}
    deltas = report(state)
    assert dict(deltas["game"].set_) == {"a": 2} and deltas["game"].delete == ()


def test_rollback_of_an_in_place_change_read_before_the_request() -> None:
    state = make(g={"l": [1]})
    state["g"]["l"].append(2)  # outside any request, not yet reported
    state.begin()
    state["g"]["l"].append(3)
    state.rollback()
    assert state["g"]["l"] == [1, 2]
    assert dict(report(state)["g"].set_) == {"l": [1, 2]}


def test_frozen_state_refuses_writes() -> None:
    state = make(game={"a": 1})
    state.freeze("fenced")
    with pytest.raises(SessionFrozen, match="fenced"):
        state["game"]["a"] = 2
    with pytest.raises(SessionFrozen):
        del state["game"]["a"]
    assert state["game"]["a"] == 1
    state.thaw()
    state["game"]["a"] = 2


def test_key_types_and_unencodable_values() -> None:
    state = make(g={})
    g = state["g"]
    g["s"], g[1], g[b"b"] = 1, 2, 3
    for bad in (1.5, None, (1,), True):
        with pytest.raises(StateError):
            g[bad] = 1
    g["set"] = {1, 2}
    with pytest.raises(EnvelopeError):  # the SDK then rolls the request back
        encode(Res(1, None, state.collect()))


def test_load_replaces_and_drops_unreported_changes() -> None:
    state = make(g={"a": 1})
    held = state["g"]
    held["a"] = 2
    state.load("g", 9, {"z": 0})
    assert state["g"] is held and held.version == 9 and held.to_dict() == {"z": 0}
    assert report(state) == {}


def test_digest_is_cached_until_the_partition_changes() -> None:
    state = make(g={"a": [1]})
    assert state.digest("g") == digest({"a": [1]})
    state["g"]["a"].append(2)
    assert state.digest("g") == digest({"a": [1, 2]})
    state["g"]["b"] = 1
    assert state.digest("g") == digest({"a": [1, 2], "b": 1})


def test_to_dict_is_a_deep_untracked_copy() -> None:
    state = make(g={"l": [1]})
    copy_ = state["g"].to_dict()
    copy_["l"].append(2)
    assert state["g"].to_dict() == {"l": [1]}
    assert report(state) == {}


# --- property: the deltas, applied to the last reported data, give the current data -----------------

ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["set", "del", "append", "nested", "read", "replace", "begin", "rollback", "end", "report"]
        ),
        st.sampled_from(["a", "b", "c", 1, b"k"]),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=40,
)


def apply_delta(data: dict, delta: Delta) -> dict:
    out = copy.deepcopy(data)
    for k in delta.delete:
        out.pop(k, None)
    out.update(copy.deepcopy(dict(delta.set_)))
    return out


@settings(max_examples=150, deadline=None)
@given(script=ops)
def test_deltas_reproduce_the_data_and_rollback_is_exact(script) -> None:
    state = make(p={"a": 0, "b": [0]})
    reported = copy.deepcopy(state["p"].to_dict())
    version = 3
    checkpoint = None
    for op, key, n in script:
        part = state["p"]
        if op == "set":
            part[key] = n
        elif op == "del":
            part.pop(key, None)
        elif op == "append":
            if isinstance(part.get(key), list):
                part[key].append(n)
            else:
                part[key] = [n]
        elif op == "nested":
            value = part.get(key)
            if isinstance(value, dict):
                value[str(n)] = n
            else:
                part[key] = {"x": [n]}
        elif op == "read":
            part.get(key)
        elif op == "replace":
            state["p"] = {"a": n}
        elif op == "begin" and not state.in_request:
            checkpoint = copy.deepcopy(part.to_dict())
            state.begin()
        elif op == "rollback" and state.in_request:
            state.rollback()
            assert state["p"].to_dict() == checkpoint
        elif op == "end" and state.in_request:
            state.end()
        elif op == "report" and not state.in_request:
            deltas = report(state)
            if "p" in deltas:
                version += 1
                assert deltas["p"].version == version
                reported = apply_delta(reported, deltas["p"])
            assert reported == state["p"].to_dict()
    if state.in_request:
        state.end()
    deltas = report(state)
    if "p" in deltas:
        reported = apply_delta(reported, deltas["p"])
    assert reported == state["p"].to_dict()
