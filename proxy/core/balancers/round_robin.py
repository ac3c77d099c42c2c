"""Round robin: no affinity, each new connection to the next member."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import ClassVar

from proxy.core.balancers.base import OrderedMembers


class RoundRobinBalancer(OrderedMembers):
    name: ClassVar[str] = "round_robin"

    def __init__(self, balance_factor: float = 1.25) -> None:
        super().__init__(balance_factor)
        self._next = 0

    def remove(self, server: str) -> None:
        members = self._members
        if server not in members:
            raise KeyError(server)
        index = members.index(server)
        super().remove(server)
        # Keep pointing at the same next member: the ones after ``index`` shifted down by one.
        if index < self._next:
            self._next -= 1

    def pick(self, key: int, load: Mapping[str, int], exclude: Container[str] = ()) -> str | None:
        members = self._members
        n = len(members)
        for i in range(n):
            index = (self._next + i) % n
            name = members[index]
            if name not in exclude:
                self._next = (index + 1) % n
                return name
        return None
