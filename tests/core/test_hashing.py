from __future__ import annotations

import ctypes
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.hashing import MementoHash, jump_hash, key_hash

# Figure 1 of Lamping & Veach (2014), verbatim.
REFERENCE_C = r"""
#include <stdint.h>
int32_t JumpConsistentHash(uint64_t key, int32_t num_buckets) {
    int64_t b = -1, j = 0;
    while (j < num_buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (b + 1) * (double(1LL << 31) / double((key >> 33) + 1));
    }
    return b;
}
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("jump")
    src = d / "jump.cc"
    src.write_text('extern "C" {\n' + REFERENCE_C.replace("#include <stdint.h>", "") + "}\n")
    lib = d / "libjump.so"
    subprocess.run(
        ["g++", "-O2", "-shared", "-fPIC", "-include", "stdint.h", str(src), "-o", str(lib)], check=True
    )
    fn = ctypes.CDLL(str(lib)).JumpConsistentHash
    fn.argtypes = [ctypes.c_uint64, ctypes.c_int32]
    fn.restype = ctypes.c_int32
    return fn


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(1, 2**31 - 1))
def test_jump_hash_matches_the_published_c(reference, key: int, buckets: int) -> None:
    assert jump_hash(key, buckets) == reference(key, buckets)


@pytest.mark.parametrize(
    "key,buckets", [(0, 1), (0, 2**31 - 1), (2**64 - 1, 1), (2**64 - 1, 2**31 - 1), (1, 10), (123456789, 1000)]
)
def test_jump_hash_edges(reference, key: int, buckets: int) -> None:
    assert jump_hash(key, buckets) == reference(key, buckets)


def test_jump_hash_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        jump_hash(1, 0)
    with pytest.raises(ValueError):
        jump_hash(-1, 3)
    with pytest.raises(ValueError):
        jump_hash(2**64, 3)


def test_key_hash_is_xxh3_and_stable() -> None:
    assert key_hash("127.0.0.1") == key_hash(b"127.0.0.1")
    assert key_hash(b"") == 0x2D06800538D394C2  # xxh3_64 of the empty input, seed 0


KEYS = [key_hash(f"k{i}") for i in range(4000)]


def mapping(m: MementoHash) -> list[int]:
    return [m.lookup(k) for k in KEYS]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 24), st.data())
def test_removing_any_bucket_moves_only_its_keys(n: int, data) -> None:
    m = MementoHash(n)
    # A few earlier arbitrary removals, so the replacement chains are exercised.
    for _ in range(data.draw(st.integers(0, n - 2))):
        working = [b for b in range(m.size) if m.is_working(b)]
        if len(working) <= 2:
            break
        m.remove(data.draw(st.sampled_from(working)))
    before = mapping(m)
    assert all(m.is_working(b) for b in before)
    working = [b for b in range(m.size) if m.is_working(b)]
    victim = data.draw(st.sampled_from(working))
    m.remove(victim)
    after = mapping(m)
    for b0, b1 in zip(before, after, strict=True):
        if b0 != victim:
            assert b1 == b0
        else:
            assert b1 != victim and m.is_working(b1)
    # Restoring undoes the removal exactly.
    assert m.add() == victim
    assert mapping(m) == before


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40))
def test_adding_moves_about_one_in_n_plus_one_all_to_the_new_bucket(n: int) -> None:
    m = MementoHash(n)
    before = mapping(m)
    new = m.add()
    after = mapping(m)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert all(b == new for _, b in moved)
    expected = len(KEYS) / (n + 1)
    assert abs(len(moved) - expected) < 5 * expected**0.5 + 10


def test_removed_keys_spread_over_the_remaining_buckets() -> None:
    m = MementoHash(10)
    m.remove(3)
    counts = [0] * 10
    for b in mapping(m):
        counts[b] += 1
    assert counts[3] == 0
    assert min(c for i, c in enumerate(counts) if i != 3) > len(KEYS) / 9 * 0.75


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=40))
def test_same_ordered_changes_give_same_placement(ops) -> None:
    a, b = MementoHash(5), MementoHash(5)
    for is_add, pick in ops:
        for m in (a, b):
            working = [x for x in range(m.size) if m.is_working(x)]
            if is_add or len(working) <= 1:
                m.add()
            else:
                m.remove(working[pick % len(working)])
    assert mapping(a) == mapping(b)
    assert all(a.is_working(x) for x in mapping(a))


def test_lookup_with_nothing_working() -> None:
    m = MementoHash(1)
    m.remove(0)
    with pytest.raises(LookupError):
        m.lookup(1)
    with pytest.raises(KeyError):
        m.remove(0)
