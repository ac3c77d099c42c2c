"""Least connections: the member with the fewest active connections; ties rotate."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import ClassVar

from proxy.core.balancers.base import OrderedMembers


class LeastConnBalancer(OrderedMembers):
    name: ClassVar[str] = "least_conn"

    def __init__(self, balance_factor: float = 1.25) -> None:
        super().__init__(balance_factor)
        self._rotation = 0

    def pick(self, key: int, load: Mapping[str, int], exclude: Container[str] = ()) -> str | None:
        members = self._members
        n = len(members)
        best: str | None = None
        best_load = 0
        start = self._rotation % n if n else 0
        for i in range(n):
            name = members[(start + i) % n]
            if name in exclude:
                continue
            current = load.get(name, 0)
            if best is None or current < best_load:
                best, best_load = name, current
        self._rotation += 1
        return best
