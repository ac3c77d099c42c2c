"""Round robin: no affinity, each new connection to the next member."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import ClassVar


class RoundRobinBalancer:
    name: ClassVar[str] = "round_robin"

    def __init__(self, balance_factor: float = 1.25) -> None:
        self._members: list[str] = []
        self._next = 0

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._members)

    def add(self, server: str) -> None:
        if server in self._members:
            raise ValueError(f"{server!r} is already a member")
        self._members.append(server)

    def remove(self, server: str) -> None:
        index = self._members.index(server)
        del self._members[index]
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
