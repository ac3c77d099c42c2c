"""Behaviour of the PartitionStore API, the same for the memory and the durable store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.canonical import canonical_packb, digest
from replay.store import (
    DurableStore,
    InvalidData,
    InvalidName,
    MemoryStore,
    PartitionState,
    PartitionStore,
    StaleVersion,
    StoreClosed,
    StoreLimitExceeded,
    StoreLimits,
    VersionGap,
)


@pytest.fixture(params=["memory", "durable"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made: list[MemoryStore] = []

    def make(**kwargs: Any) -> MemoryStore:
        if request.param == "memory":
            store = MemoryStore(**kwargs)
        else:
            store = DurableStore(tmp_path / f"store{len(made)}", fsync="off", **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: Any) -> MemoryStore:
    return make_store(ttl_s=10.0)


def test_both_stores_implement_the_protocol(store: MemoryStore) -> None:
    assert isinstance(store, PartitionStore)


def test_unknown_session_reads_empty(store: MemoryStore) -> None:
    assert store.get_partition_list("nobody") == []
    assert store.get_partition_data("nobody", "auth") is None
    assert list(store.sessions()) == []
    assert store.last_active_s("nobody") is None


def test_set_creates_and_bumps_the_version(store: MemoryStore) -> None:
    assert store.set_partition_data("s1", "game", {"score": 1}) == 1
    assert store.set_partition_data("s1", "game", {"score": 2}) == 2
    assert store.set_partition_data("s1", "auth", {"user": "ann"}) == 1
    assert store.get_partition_data("s1", "game") == PartitionState(2, {"score": 2})
    assert store.get_partition_list("s1") == ["auth", "game"]
    assert list(store.sessions()) == ["s1"]


def test_set_is_a_full_replace(store: MemoryStore) -> None:
    store.set_partition_data("s1", "game", {"a": 1, "b": 2})
    store.set_partition_data("s1", "game", {"c": 3})
    assert store.get_partition_data("s1", "game") == PartitionState(2, {"c": 3})


def test_reads_are_copies_and_writes_copy_their_input(store: MemoryStore) -> None:
    data: dict[str, Any] = {"items": [1, 2], "nested": {"k": [3]}}
    store.set_partition_data("s1", "cart", data)
    data["items"].append(99)
    data["nested"]["k"].append(99)
    got = store.get_partition_data("s1", "cart")
    assert got is not None
    assert got.data == {"items": [1, 2], "nested": {"k": [3]}}
    got.data["items"].append(7)  # type: ignore[index]
    store.apply_delta("s1", "cart", 2, {"list": [1]}, [])
    again = store.get_partition_data("s1", "cart")
    assert again is not None and again.data["items"] == [1, 2]


def test_values_are_stored_in_their_msgpack_normal_form(store: MemoryStore) -> None:
    store.set_partition_data("s1", "game", {"pos": (1, 2), "raw": bytearray(b"ab")})
    store.apply_delta("s1", "game", 2, {"path": ((0, 0), (1, 1))}, [])
    got = store.get_partition_data("s1", "game")
    assert got is not None
    assert got.data == {"pos": [1, 2], "raw": b"ab", "path": [[0, 0], [1, 1]]}
    assert type(got.data["raw"]) is bytes


def test_apply_delta_from_nothing_and_onwards(store: MemoryStore) -> None:
    assert store.apply_delta("s1", "game", 1, {"hp": 10, "mp": 5}, []) == 1
    assert store.apply_delta("s1", "game", 2, {"hp": 9}, ["mp", "absent"]) == 2
    assert store.apply_delta("s1", "game", 3, {}, []) == 3  # an empty delta still moves the version
    assert store.get_partition_data("s1", "game") == PartitionState(3, {"hp": 9})


@pytest.mark.parametrize("version", [0, 1, 2, -5])
def test_stale_delta_is_rejected_and_changes_nothing(store: MemoryStore, version: int) -> None:
    store.apply_delta("s1", "game", 1, {"hp": 10}, [])
    store.apply_delta("s1", "game", 2, {"hp": 9}, [])
    with pytest.raises(StaleVersion) as info:
        store.apply_delta("s1", "game", version, {"hp": 0}, [])
    assert (info.value.current_version, info.value.got_version) == (2, version)
    assert "version 3" in str(info.value)
    assert store.get_partition_data("s1", "game") == PartitionState(2, {"hp": 9})


@pytest.mark.parametrize("version", [4, 100])
def test_delta_with_a_gap_is_rejected_and_changes_nothing(store: MemoryStore, version: int) -> None:
    store.apply_delta("s1", "game", 1, {"hp": 10}, [])
    store.apply_delta("s1", "game", 2, {"hp": 9}, [])
    with pytest.raises(VersionGap):
        store.apply_delta("s1", "game", version, {"hp": 0}, [])
    assert store.get_partition_data("s1", "game") == PartitionState(2, {"hp": 9})


def test_first_delta_must_be_version_1(store: MemoryStore) -> None:
    with pytest.raises(VersionGap):
        store.apply_delta("s1", "game", 2, {"hp": 1}, [])
    with pytest.raises(StaleVersion):
        store.apply_delta("s1", "game", 0, {"hp": 1}, [])
    assert list(store.sessions()) == []


def test_versioned_set_checks_like_a_delta(store: MemoryStore) -> None:
    assert store.set_partition_data("s1", "game", {"a": 1}, version=1) == 1
    with pytest.raises(StaleVersion):
        store.set_partition_data("s1", "game", {"a": 2}, version=1)
    with pytest.raises(VersionGap):
        store.set_partition_data("s1", "game", {"a": 2}, version=3)
    assert store.set_partition_data("s1", "game", {"a": 2}, version=2) == 2


def test_versions_are_monotonic_across_set_and_delta(store: MemoryStore) -> None:
    seen = []
    for i in range(10):
        if i % 3 == 0:
            seen.append(store.set_partition_data("s1", "game", {"i": i}))
        else:
            seen.append(store.apply_delta("s1", "game", seen[-1] + 1, {"i": i}, []))
    assert seen == list(range(1, 11))


def test_delta_naming_a_key_in_set_and_del_is_refused(store: MemoryStore) -> None:
    store.apply_delta("s1", "game", 1, {"a": 1}, [])
    with pytest.raises(InvalidData, match="both"):
        store.apply_delta("s1", "game", 2, {"a": 2}, ["a"])
    assert store.get_partition_data("s1", "game") == PartitionState(1, {"a": 1})


def test_delete_session(store: MemoryStore) -> None:
    store.set_partition_data("s1", "game", {"a": 1})
    store.set_partition_data("s2", "game", {"a": 1})
    store.delete_session("s1")
    store.delete_session("never-existed")
    assert list(store.sessions()) == ["s2"]
    assert store.get_partition_data("s1", "game") is None
    # a session id may be reused; its versions start again
    assert store.apply_delta("s1", "game", 1, {"b": 2}, []) == 1


@pytest.mark.parametrize(
    "sid", ["", "a/b", "line\nbreak", "nul\x00", "x" * 129, "é" * 65, "\ud800", 7, None, b"s1"]
)
def test_invalid_session_ids(store: MemoryStore, sid: Any) -> None:
    with pytest.raises(InvalidName):
        store.set_partition_data(sid, "game", {})
    with pytest.raises(InvalidName):
        store.get_partition_list(sid)


@pytest.mark.parametrize("sid", ["s", "x" * 128, "é" * 64, "user:42@eu", "b64+token=="])
def test_valid_session_ids(store: MemoryStore, sid: str) -> None:
    store.set_partition_data(sid, "game", {})
    assert store.get_partition_list(sid) == ["game"]


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "-x", "sp ace", "x" * 65, "é", 3])
def test_invalid_partition_names(store: MemoryStore, name: Any) -> None:
    with pytest.raises(InvalidName):
        store.set_partition_data("s1", name, {})
    with pytest.raises(InvalidName):
        store.apply_delta("s1", name, 1, {}, [])


@pytest.mark.parametrize(
    ("set_", "delete"),
    [
        ({"a": {1, 2}}, []),
        ({"a": object()}, []),
        ({True: 1}, []),
        ({1.5: 1}, []),
        ({(1, 2): 1}, []),
        ({"a": 2**64}, []),
        ({}, "ab"),
        ({}, [None]),
        ([("a", 1)], []),
    ],
)
def test_invalid_delta_content_is_refused_and_changes_nothing(
    store: MemoryStore, set_: Any, delete: Any
) -> None:
    store.apply_delta("s1", "game", 1, {"keep": 1}, [])
    with pytest.raises(InvalidData):
        store.apply_delta("s1", "game", 2, set_, delete)
    assert store.get_partition_data("s1", "game") == PartitionState(1, {"keep": 1})


@pytest.mark.parametrize("data", [{"a": {1}}, {True: 1}, {"nested": {(1,): 2}}, [1, 2]])
def test_invalid_partition_data_is_refused(store: MemoryStore, data: Any) -> None:
    with pytest.raises(InvalidData):
        store.set_partition_data("s1", "game", data)
    assert list(store.sessions()) == []


def test_int_and_bytes_keys_are_allowed_and_distinct_from_str(store: MemoryStore) -> None:
    store.apply_delta("s1", "game", 1, {1: "int", "1": "str", b"1": "bin"}, [])
    store.apply_delta("s1", "game", 2, {}, [1])
    got = store.get_partition_data("s1", "game")
    assert got is not None and got.data == {"1": "str", b"1": "bin"}


def test_digest_of_a_state_matches_the_canonical_digest(store: MemoryStore) -> None:
    store.apply_delta("s1", "game", 1, {"b": 1, "a": [1.5, None]}, [])
    got = store.get_partition_data("s1", "game")
    assert got is not None
    assert got.digest == digest({"a": [1.5, None], "b": 1})
    assert got.to_wire() == {"v": 1, "data": {"b": 1, "a": [1.5, None]}}


# --- limits --------------------------------------------------------------------------------------


def test_max_sessions(make_store: Any) -> None:
    store = make_store(limits=StoreLimits(max_sessions=2))
    store.set_partition_data("s1", "game", {})
    store.set_partition_data("s2", "game", {})
    store.set_partition_data("s2", "auth", {})  # existing session: fine
    with pytest.raises(StoreLimitExceeded) as info:
        store.apply_delta("s3", "game", 1, {}, [])
    assert info.value.limit == "max_sessions"
    assert "s3" in str(info.value)
    store.delete_session("s1")
    store.apply_delta("s3", "game", 1, {}, [])


def test_max_partitions_per_session(make_store: Any) -> None:
    store = make_store(limits=StoreLimits(max_partitions_per_session=2))
    store.set_partition_data("s1", "a", {})
    store.set_partition_data("s1", "b", {})
    store.set_partition_data("s1", "b", {"replace": 1})
    with pytest.raises(StoreLimitExceeded, match="max_partitions_per_session"):
        store.set_partition_data("s1", "c", {})
    assert store.get_partition_list("s1") == ["a", "b"]


def test_max_partition_bytes_is_the_canonical_size(make_store: Any) -> None:
    limit = 100
    store = make_store(limits=StoreLimits(max_partition_bytes=limit))
    exactly = {"k": "x" * (limit - 1 - 2 - 2)}  # map header 1, "k" 2, str8 header 2
    assert len(canonical_packb(exactly)) == limit
    store.set_partition_data("s1", "game", exactly)
    with pytest.raises(StoreLimitExceeded, match="max_partition_bytes"):
        store.set_partition_data("s1", "game", {"k": "x" * (limit - 4)})
    with pytest.raises(StoreLimitExceeded):
        store.apply_delta("s1", "game", 2, {"j": 1}, [])
    store.apply_delta("s1", "game", 2, {"j": 1}, ["k"])  # shrinking is fine
    assert store.get_partition_data("s1", "game") == PartitionState(2, {"j": 1})


sizes_keys = st.sampled_from(["a", "b", "c", 1, 2, b"z", "long-key-" * 3])
sizes_values = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.floats(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.dictionaries(sizes_keys, sizes_values, max_size=4), st.lists(sizes_keys, max_size=3))
    )
)
def test_tracked_size_equals_the_canonical_size_after_any_deltas(
    deltas: list[tuple[dict[Any, Any], list[Any]]],
) -> None:
    store = MemoryStore()
    for version, (set_, delete) in enumerate(deltas, start=1):
        delete = [k for k in delete if k not in set_]
        store.apply_delta("s1", "game", version, set_, delete)
    got = store.get_partition_data("s1", "game")
    expected = len(canonical_packb(got.data)) if got is not None else 0
    assert store.statistics().data_bytes == expected


def test_many_keys_cross_the_map16_header_size() -> None:
    store = MemoryStore()
    store.apply_delta("s1", "game", 1, {f"k{i}": i for i in range(15)}, [])
    store.apply_delta("s1", "game", 2, {"k15": 15}, [])  # 16 entries: map16 header
    got = store.get_partition_data("s1", "game")
    assert got is not None
    assert store.statistics().data_bytes == len(canonical_packb(got.data))
    store.apply_delta("s1", "game", 3, {}, ["k0"])
    got = store.get_partition_data("s1", "game")
    assert got is not None
    assert store.statistics().data_bytes == len(canonical_packb(got.data))


# --- TTL -----------------------------------------------------------------------------------------


def test_sessions_expire_after_ttl_idle(store: MemoryStore) -> None:
    store.touch("s1", 100.0)  # unknown session: only advances the store's clock
    store.set_partition_data("s1", "game", {})  # created at the latest known time
    store.set_partition_data("s2", "game", {})
    assert store.last_active_s("s1") == 100.0
    store.touch("s2", 105.0)
    assert store.expire(110.0) == []  # idle exactly ttl: not more than ttl
    assert store.expire(110.5) == ["s1"]
    assert list(store.sessions()) == ["s2"]
    assert store.expire(115.0) == []
    assert store.expire(115.001) == ["s2"]
    assert store.statistics().expired_total == 2


def test_touch_keeps_a_session_alive_and_never_moves_it_back(store: MemoryStore) -> None:
    store.touch("s1", 0.0)
    store.set_partition_data("s1", "game", {})
    for now in range(5, 100, 5):
        store.touch("s1", float(now))
        assert store.expire(float(now) + 9) == []
    store.touch("s1", 50.0)  # an older time does not rewind the idle clock
    assert store.last_active_s("s1") == 95.0
    assert store.expire(105.5) == ["s1"]


def test_a_session_created_before_any_time_is_known_gets_a_full_ttl(store: MemoryStore) -> None:
    store.set_partition_data("s1", "game", {})
    assert store.last_active_s("s1") is None
    assert store.expire(1000.0) == []  # stamped now, not expired on sight
    assert store.last_active_s("s1") == 1000.0
    assert store.expire(1010.5) == ["s1"]


def test_no_ttl_means_no_expiry(make_store: Any) -> None:
    store = make_store(ttl_s=None)
    store.touch("s1", 0.0)
    store.set_partition_data("s1", "game", {})
    assert store.expire(1e12) == []


def test_expire_with_many_sessions_drops_exactly_the_idle_ones(store: MemoryStore) -> None:
    store.touch("x", 0.0)
    for i in range(200):
        store.set_partition_data(f"s{i}", "game", {})
        store.touch(f"s{i}", float(i))
        store.touch(f"s{i}", float(i) + 0.5)  # stale heap entries must not expire anything early
    assert sorted(store.expire(100.0), key=lambda s: int(s[1:])) == [f"s{i}" for i in range(90)]
    assert len(list(store.sessions())) == 110


# --- commit and lifecycle ------------------------------------------------------------------------


def test_commit_sequence_rises_by_one_per_non_empty_commit(store: MemoryStore) -> None:
    assert store.commit() == 0
    store.set_partition_data("s1", "game", {})
    assert store.commit() == 1
    assert store.commit() == 1
    store.apply_delta("s1", "game", 2, {"a": 1}, [])
    store.delete_session("s1")
    assert store.commit() == 2
    assert store.durable_seq == 2  # fsync off (durable) / memory: every commit counts


def test_closed_store_refuses_calls(store: MemoryStore) -> None:
    store.set_partition_data("s1", "game", {})
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.get_partition_data("s1", "game")
    with pytest.raises(StoreClosed):
        store.set_partition_data("s1", "game", {})


def test_sessions_is_a_snapshot_safe_to_iterate_while_deleting(store: MemoryStore) -> None:
    for i in range(5):
        store.set_partition_data(f"s{i}", "game", {})
    for sid in store.sessions():
        store.delete_session(sid)
    assert list(store.sessions()) == []


def test_statistics(store: MemoryStore) -> None:
    store.set_partition_data("s1", "game", {"a": 1})
    store.set_partition_data("s1", "auth", {})
    stats = store.statistics()
    assert (stats.sessions, stats.partitions, stats.pending_ops > 0) == (1, 2, True)
    assert stats.data_bytes == len(canonical_packb({"a": 1})) + len(canonical_packb({}))
    store.commit()
    assert store.statistics().pending_ops == 0
