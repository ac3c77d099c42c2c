"""The interface every balancer implements (sans-IO)."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import ClassVar, Protocol


class Balancer(Protocol):
    """Chooses a member for a new connection.

    Membership changes are ordered and deterministic: two instances fed the same ``add``/``remove``
    sequence pick the same members for the same keys and loads.  ``add`` raises ValueError for a
    name that is already a member, ``remove`` raises KeyError for one that is not.  ``load`` maps
    members to their current active connections (missing means 0; names that are not members are
    ignored); ``exclude`` holds members not to return (already tried for this connection).  ``pick``
    returns None when no member is eligible.
    """

    name: ClassVar[str]

    def add(self, server: str) -> None: ...

    def remove(self, server: str) -> None: ...

    @property
    def members(self) -> tuple[str, ...]: ...

    def pick(self, key: int, load: Mapping[str, int], exclude: Container[str] = ()) -> str | None: ...


class OrderedMembers:
    """Membership kept in insertion order, for balancers without hashing."""

    def __init__(self, balance_factor: float = 1.25) -> None:
        # ``balance_factor`` only matters to the consistent balancer; accepted so that every
        # balancer is built the same way by ``make_balancer``.
        self._members: list[str] = []

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._members)

    def add(self, server: str) -> None:
        if server in self._members:
            raise ValueError(f"{server!r} is already a member")
        self._members.append(server)

    def remove(self, server: str) -> None:
        try:
            self._members.remove(server)
        except ValueError:
            raise KeyError(server) from None
