"""Balancers, one per file, sharing the :class:`~proxy.core.balancers.base.Balancer` protocol."""

from __future__ import annotations

from collections.abc import Callable

from proxy.core.balancers.base import Balancer
from proxy.core.balancers.consistent import ConsistentHashBalancer, capacity
from proxy.core.balancers.least_conn import LeastConnBalancer
from proxy.core.balancers.round_robin import RoundRobinBalancer

BALANCERS: dict[str, Callable[..., Balancer]] = {
    ConsistentHashBalancer.name: ConsistentHashBalancer,
    RoundRobinBalancer.name: RoundRobinBalancer,
    LeastConnBalancer.name: LeastConnBalancer,
}


def make_balancer(name: str, *, balance_factor: float = 1.25) -> Balancer:
    """A new, empty balancer called ``name``; ValueError for an unknown name."""
    try:
        cls = BALANCERS[name]
    except KeyError:
        raise ValueError(f"unknown balancer {name!r}; choose one of {', '.join(BALANCERS)}") from None
    return cls(balance_factor=balance_factor)


__all__ = [
    "BALANCERS",
    "Balancer",
    "ConsistentHashBalancer",
    "LeastConnBalancer",
    "RoundRobinBalancer",
    "capacity",
    "make_balancer",
]
