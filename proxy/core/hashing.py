"""Consistent hashing for placement (sans-IO).

- :func:`jump_hash` is Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014),
  figure 1, bit for bit: the 64-bit LCG step, then ``(b + 1) * (2**31 / ((key >> 33) + 1))`` computed
  as a double with the division first (ports that multiply first round differently and disagree).
- :class:`MementoHash` is Coluzzi, Brocco, Antonelli, Tranquillini, "MementoHash: A Stateful, Minimal
  Memory, Best Performing Consistent Hash Algorithm" (IEEE/ACM ToN 2024), section IV: jump hash over
  the "b-array" of every bucket ever used, plus a replacement set that remembers, for each removed
  bucket, which slot replaced it and which bucket was removed before it.  Removing *any* bucket moves
  only that bucket's keys; adding restores the most recently removed bucket (LIFO), undoing the
  removal exactly, or appends a new bucket when none is removed.
- Keys are hashed with xxh3-64 (:func:`key_hash`), never Python's per-process salted ``hash()``,
  so every proxy instance computes the same placement.
"""

from __future__ import annotations

import xxhash

_MASK64 = (1 << 64) - 1

# Seeds of :func:`rehash` live above every bucket number, so the bounded-load walk never reuses
# the hash that MementoHash's lookup applies to the same key (seeded with a bucket, < 2**32).
_WALK_SEED = 1 << 63

_xxh3 = xxhash.xxh3_64_intdigest


def jump_hash(key: int, num_buckets: int) -> int:
    """Bucket in ``[0, num_buckets)`` for a 64-bit ``key`` (Lamping & Veach 2014, figure 1)."""
    if num_buckets < 1:
        raise ValueError("num_buckets must be >= 1")
    if not 0 <= key <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError("key must be an unsigned 64-bit integer")
    # Literals rather than module globals: this runs once per accepted connection, and a constant
    # load is the cheapest operand in the loop.  ``float / int`` converts the int (at most 2**31,
    # exact in a double) before dividing, so it is the paper's ``double(1LL << 31) / double(...)``
    # without a call to float(); ``(b + 1) *`` then multiplies the rounded quotient, as in C.
    b = -1
    j = 0
    while j < num_buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (2147483648.0 / ((key >> 33) + 1)))
    return b


def key_hash(data: bytes | str) -> int:
    """xxh3-64 of ``data`` (str is UTF-8 encoded): the placement key of a client or session."""
    if isinstance(data, str):
        data = data.encode()
    return _xxh3(data)


def rehash(key: int, attempt: int) -> int:
    """The 64-bit key of walk step ``attempt`` (>= 0) for ``key``: for retries and bounded load."""
    return _xxh3(key.to_bytes(8, "little"), _WALK_SEED | attempt)


class MementoHash:
    """Jump hash with arbitrary bucket removal (MementoHash, section IV of the paper).

    ``size`` is the length of the b-array (every bucket ever used, working or removed); the working
    buckets are ``[0, size)`` minus the removed ones.  ``_replaced[b] = (replacer, previous)``:
    ``replacer`` is the working-set size right after ``b`` was removed (the slot that took ``b``'s
    place), ``previous`` the bucket removed just before ``b``.  The state depends only on the
    ordered ``add``/``remove`` calls, so instances that apply the same calls agree on every lookup.
    """

    __slots__ = ("_last_removed", "_replaced", "size")

    def __init__(self, size: int = 0) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self._replaced: dict[int, tuple[int, int]] = {}
        self._last_removed = size

    @property
    def working(self) -> int:
        """Number of working buckets."""
        return self.size - len(self._replaced)

    def is_working(self, bucket: int) -> bool:
        return 0 <= bucket < self.size and bucket not in self._replaced

    def add(self) -> int:
        """Restore the most recently removed bucket, or append one; return it."""
        if not self._replaced:
            bucket = self.size
            self.size += 1
            self._last_removed = self.size
            return bucket
        bucket = self._last_removed
        _, previous = self._replaced.pop(bucket)
        self._last_removed = previous
        return bucket

    def remove(self, bucket: int) -> None:
        """Remove a working bucket; only the keys it held move.  KeyError if it is not working."""
        if not self.is_working(bucket):
            raise KeyError(bucket)
        if not self._replaced and bucket == self.size - 1:
            # Removing the tail with nothing remembered is plain jump hash with one bucket fewer.
            self.size -= 1
            self._last_removed = self.size
            return
        self._replaced[bucket] = (self.working - 1, self._last_removed)
        self._last_removed = bucket

    def lookup(self, key: int) -> int:
        """The working bucket of 64-bit ``key``.  Raises LookupError when no bucket is working."""
        if self.size == len(self._replaced):
            raise LookupError("no working bucket")
        bucket = jump_hash(key, self.size)
        replaced = self._replaced
        entry = replaced.get(bucket)
        if entry is None:
            return bucket
        data = key.to_bytes(8, "little")
        while entry is not None:
            r = entry[0]
            # Rehash uniformly over the r slots that were working right after ``bucket`` left ...
            u = _xxh3(data, bucket) % r
            # ... and resolve a slot whose bucket had already been removed before ``bucket``
            # (its replacer is >= r) to the bucket that filled it.
            nxt = replaced.get(u)
            while nxt is not None and nxt[0] >= r:
                u = nxt[0]
                nxt = replaced.get(u)
            bucket = u
            entry = nxt
        return bucket
