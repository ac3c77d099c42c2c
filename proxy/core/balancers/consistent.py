"""Consistent hashing with bounded loads.

Placement is MementoHash over jump hash (``proxy.core.hashing``): each server name is bound to a
bucket; removing a server removes its bucket (only its keys move), adding one restores the most
recently removed bucket or appends a new one (about 1/(n+1) of keys move, all to it).  MementoHash
restores buckets only in LIFO order, so a server that comes back gets its own keys back only if it
was the last to leave; otherwise it takes the bucket (and keys) of whoever left last, and that
server gets another bucket when it returns.  Either way each change moves the minimum of keys.

Bounded load (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018):
no member takes more than ``capacity = ceil(c * (total + 1) / n)`` connections, where ``total`` is the
current load and the +1 is the connection being placed.  A full or excluded candidate walks on to the
next candidate in a per-key deterministic sequence: rehashed lookups first (so overflow spreads
evenly instead of piling onto one neighbour), then a scan of the members in bucket order.  Every
instance with the same membership changes and the same loads picks the same member.

The cap always leaves a member below it (``n * capacity > total``), so without exclusions the bound
holds strictly.  When every member *not* excluded is full (the slack sits on members that already
failed this connection), the least-loaded eligible member takes it, one over the cap, rather than
refusing a client while healthy members remain.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from typing import ClassVar

from proxy.core.hashing import MementoHash, rehash

# Rehashed candidates tried before the scan; enough that a scan is rare below c = 1.1.
_REHASH_ATTEMPTS = 8


def capacity(total: int, n: int, c: float) -> int:
    """Most connections one of ``n`` members may hold once one more joins ``total`` (Mirrokni et al.)."""
    if n <= 0:
        return 0
    return max(1, math.ceil(c * (total + 1) / n))


class ConsistentHashBalancer:
    name: ClassVar[str] = "consistent"

    def __init__(self, balance_factor: float = 1.25) -> None:
        if balance_factor < 1.0:
            raise ValueError("balance_factor must be >= 1.0")
        self.balance_factor = balance_factor
        self._memento = MementoHash()
        self._bucket_of: dict[str, int] = {}
        self._name_of: dict[int, str] = {}

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._name_of[b] for b in sorted(self._name_of))

    def add(self, server: str) -> None:
        """Bind ``server`` to the most recently removed bucket, or to a new one (MementoHash add)."""
        if server in self._bucket_of:
            raise ValueError(f"{server!r} is already a member")
        bucket = self._memento.add()
        self._bucket_of[server] = bucket
        self._name_of[bucket] = server

    def remove(self, server: str) -> None:
        """Remove ``server``'s bucket: only the keys it held move.  KeyError if not a member."""
        bucket = self._bucket_of.pop(server)
        del self._name_of[bucket]
        self._memento.remove(bucket)

    def lookup(self, key: int) -> str | None:
        """Pure placement of ``key``, ignoring load."""
        if not self._name_of:
            return None
        return self._name_of[self._memento.lookup(key)]

    def pick(self, key: int, load: Mapping[str, int], exclude: Container[str] = ()) -> str | None:
        name_of = self._name_of
        n = len(name_of)
        if n == 0:
            return None
        get = load.get
        total = 0
        for name in name_of.values():
            total += get(name, 0)
        cap = capacity(total, n, self.balance_factor)
        memento = self._memento
        first = name_of[memento.lookup(key)]
        if first not in exclude and get(first, 0) < cap:
            return first
        for attempt in range(1, _REHASH_ATTEMPTS + 1):
            name = name_of[memento.lookup(rehash(key, attempt))]
            if name not in exclude and get(name, 0) < cap:
                return name
        # Scan in bucket order from the first candidate: deterministic, and always finds a member
        # below the cap if one exists.
        order = sorted(name_of)
        start = order.index(self._bucket_of[first])
        fallback: str | None = None
        for i in range(n):
            name = name_of[order[(start + i) % n]]
            if name in exclude:
                continue
            if get(name, 0) < cap:
                return name
            if fallback is None or get(name, 0) < get(fallback, 0):
                fallback = name
        # Every eligible member is at the cap (the excluded ones hold the slack): least loaded.
        return fallback
