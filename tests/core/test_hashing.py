from __future__ import annotations

import ctypes
import random
import shutil
import subprocess

import pytest
import xxhash
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.core.hashing import MementoHash, jump_hash, key_hash, rehash

# Figure 1 of Lamping & Veach (2014), with C casts for the paper's C++ functional casts: the
# division is a double division, then (b + 1) multiplies the rounded quotient.
REFERENCE_C = r"""
#include <stdint.h>
int32_t JumpConsistentHash(uint64_t key, int32_t num_buckets) {
    int64_t b = -1, j = 0;
    while (j < num_buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1));
    }
    return b;
}
"""

MAX_BUCKETS = 2**31 - 1
MAX_KEY = 2**64 - 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the C reference of jump hash")
    d = tmp_path_factory.mktemp("jump")
    (d / "jump.c").write_text(REFERENCE_C)
    lib = d / "libjump.so"
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", str(d / "jump.c"), "-o", str(lib)], check=True)
    fn = ctypes.CDLL(str(lib)).JumpConsistentHash
    fn.argtypes = [ctypes.c_uint64, ctypes.c_int32]
    fn.restype = ctypes.c_int32
    return fn


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, MAX_KEY),
    st.one_of(st.integers(1, 64), st.integers(1, 100_000), st.integers(1, MAX_BUCKETS)),
)
@example(0, 1)
@example(0, MAX_BUCKETS)
@example(MAX_KEY, 1)
@example(MAX_KEY, MAX_BUCKETS)
@example(181523550820250026, 1024)
def test_jump_hash_matches_the_published_c(reference, key: int, buckets: int) -> None:
    assert jump_hash(key, buckets) == reference(key, buckets)


def test_jump_hash_matches_the_published_c_on_many_keys(reference) -> None:
    rng = random.Random(2014)
    keys = [rng.getrandbits(64) for _ in range(3000)]
    for buckets in (1, 2, 3, 10, 1000, 65536, MAX_BUCKETS):
        assert [jump_hash(k, buckets) for k in keys] == [reference(k, buckets) for k in keys]


def _jump_hash_multiplying_first(key: int, num_buckets: int) -> int:
    """A common mis-port: ``(b + 1) * 2**31 / d`` rounds once where the paper rounds twice."""
    b, j = -1, 0
    while j < num_buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & MAX_KEY
        j = int((b + 1) * 2147483648.0 / ((key >> 33) + 1))
    return b


# Output of the C reference above.  The last two keys reach b = 48 with (key >> 33) + 1 = 49 * 2**21,
# where 2**31 / d rounds down and (b + 1) times it truncates to 1023: the reordered formula gives 1024,
# so it answers 48 for 1024 buckets.
VECTORS = [
    (0x0, 1, 0),
    (0x0, 2, 0),
    (0x0, MAX_BUCKETS, 0),
    (0x1, 10, 6),
    (0xFFFFFFFFFFFFFFFF, 1, 0),
    (0xFFFFFFFFFFFFFFFF, 1000, 313),
    (0xFFFFFFFFFFFFFFFF, MAX_BUCKETS, 699554662),
    (0x75BCD15, 1000, 294),
    (0xDEADBEEFCAFEBABE, 65536, 61115),
    (0x284E6B52D0231AA, 1023, 48),
    (0x284E6B52D0231AA, 1024, 1023),
]


@pytest.mark.parametrize("key,buckets,expected", VECTORS)
def test_jump_hash_fixed_vectors(key: int, buckets: int, expected: int) -> None:
    assert jump_hash(key, buckets) == expected


def test_the_fixed_vectors_tell_the_operation_order_apart() -> None:
    assert _jump_hash_multiplying_first(0x284E6B52D0231AA, 1024) == 48
    assert jump_hash(0x284E6B52D0231AA, 1024) == 1023


@pytest.mark.parametrize("key,buckets", [(1, 0), (1, -5), (-1, 3), (2**64, 3)])
def test_jump_hash_rejects_bad_arguments(key: int, buckets: int) -> None:
    with pytest.raises(ValueError):
        jump_hash(key, buckets)


def test_key_hash_is_xxh3_and_stable() -> None:
    assert key_hash("127.0.0.1") == key_hash(b"127.0.0.1") == xxhash.xxh3_64_intdigest(b"127.0.0.1")
    assert key_hash("zoë") == xxhash.xxh3_64_intdigest("zoë".encode())
    assert key_hash(b"") == 0x2D06800538D394C2  # xxh3_64 of the empty input, seed 0


def test_rehash_steps_differ_from_each_other_and_from_the_key() -> None:
    key = key_hash("10.1.2.3")
    steps = [rehash(key, attempt) for attempt in range(8)]
    assert len({key, *steps}) == 9
    assert steps == [rehash(key, attempt) for attempt in range(8)]


# -- MementoHash ---------------------------------------------------------------------------------

KEYS = [key_hash(f"k{i}") for i in range(20_000)]
FEW_KEYS = KEYS[:1500]


def mapping(m: MementoHash, keys: list[int] = FEW_KEYS) -> list[int]:
    return [m.lookup(k) for k in keys]


def working(m: MementoHash) -> list[int]:
    return [b for b in range(m.size) if m.is_working(b)]


def test_without_removals_it_is_jump_hash() -> None:
    m = MementoHash(7)
    assert mapping(m) == [jump_hash(k, 7) for k in FEW_KEYS]
    m.add()
    assert mapping(m) == [jump_hash(k, 8) for k in FEW_KEYS]
    m.remove(7)  # the tail, nothing remembered: plain jump hash again
    assert mapping(m) == [jump_hash(k, 7) for k in FEW_KEYS]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=14))
def test_every_change_moves_only_the_keys_it_must(start: int, ops) -> None:
    """After any history: removing a bucket moves only its keys, adding moves keys only onto it."""
    m = MementoHash(start)
    before = mapping(m)
    for is_add, pick in ops:
        live = working(m)
        if is_add or len(live) <= 1:
            new = m.add()
            assert m.is_working(new)
            after = mapping(m)
            assert all(b1 == b0 or b1 == new for b0, b1 in zip(before, after, strict=True))
        else:
            victim = live[pick % len(live)]
            m.remove(victim)
            assert not m.is_working(victim)
            after = mapping(m)
            for b0, b1 in zip(before, after, strict=True):
                assert b1 == b0 if b0 != victim else b1 != victim
        assert all(m.is_working(b) for b in after)
        assert m.working == len(working(m))
        before = after


@pytest.mark.parametrize("n", [1, 4, 9, 30])
def test_adding_moves_about_one_in_n_plus_one_all_to_the_new_bucket(n: int) -> None:
    m = MementoHash(n)
    before = mapping(m, KEYS)
    new = m.add()
    after = mapping(m, KEYS)
    moved = [b for a, b in zip(before, after, strict=True) if a != b]
    assert set(moved) == {new}
    p = 1 / (n + 1)
    # Binomial: within 5 standard deviations of N / (n + 1).
    assert abs(len(moved) - len(KEYS) * p) < 5 * (len(KEYS) * p * (1 - p)) ** 0.5


def test_removals_keep_the_load_even_and_restores_undo_them_in_reverse() -> None:
    m = MementoHash(16)
    original = mapping(m, KEYS)
    removed = [5, 0, 15, 9, 14, 3]
    for b in removed:
        m.remove(b)
    live = working(m)
    counts = dict.fromkeys(live, 0)
    for b in mapping(m, KEYS):
        counts[b] += 1
    fair = len(KEYS) / len(live)  # 2000 keys each; a standard deviation is about 42
    assert all(abs(c - fair) < 0.12 * fair for c in counts.values()), counts
    assert [m.add() for _ in removed] == removed[::-1]
    assert mapping(m, KEYS) == original
    assert m.add() == 16 and m.size == 17


def test_keys_stay_uniform_after_most_buckets_are_removed() -> None:
    # Long replacement chains: each hop must rehash afresh (seeded by the removed bucket, section IV),
    # or keys that pass through several removed buckets pile up on a few working ones.
    m = MementoHash(40)
    for b in random.Random(0).sample(range(40), 30):
        m.remove(b)
    counts = dict.fromkeys(working(m), 0)
    for b in mapping(m, KEYS):
        counts[b] += 1
    fair = len(KEYS) / len(counts)
    chi2 = sum((c - fair) ** 2 / fair for c in counts.values())
    assert chi2 < 27.9, counts  # chi-square, 9 degrees of freedom, 99.9th percentile


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 8), st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=40))
def test_same_ordered_changes_give_same_placement(start: int, ops) -> None:
    a, b = MementoHash(start), MementoHash(start)
    for is_add, pick in ops:
        for m in (a, b):
            live = working(m)
            if is_add or len(live) <= 1:
                m.add()
            else:
                m.remove(live[pick % len(live)])
    if a.working:
        assert mapping(a) == mapping(b)
        assert all(a.is_working(x) for x in mapping(a))


def test_errors() -> None:
    with pytest.raises(ValueError):
        MementoHash(-1)
    m = MementoHash(2)
    m.remove(0)
    with pytest.raises(KeyError):
        m.remove(0)
    with pytest.raises(KeyError):
        m.remove(2)
    m.remove(1)
    assert m.working == 0
    with pytest.raises(LookupError):
        m.lookup(1)
    assert MementoHash().working == 0
    with pytest.raises(LookupError):
        MementoHash().lookup(1)
