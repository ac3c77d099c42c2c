"""The provisioner contract: how the scaler gets a server and gives it back.

A provisioner turns a server *name* (chosen by the scaler, unique while the server lives) into a
reachable ``host:port`` and back.  ``start`` returns only once the server accepts connections, so the
time it takes is the provisioning time the scaler's lead time is measured from; ``stop`` returns once
the server is gone.  Both raise ``ProvisionError`` (the infrastructure's fault, with a reason) and
nothing else; the driver bounds them with its own deadlines and cancels them at shutdown, so a
provisioner must leave nothing running when cancelled.

A Kubernetes provisioner fits the same shape: ``start`` creates a Pod (or raises a StatefulSet's
replicas) named after the server and waits for its ``Ready`` condition, returning the Pod IP and port;
``stop`` deletes it and waits until it is gone; ``ready`` reads the condition.  It is not written yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol, runtime_checkable


class ProvisionError(Exception):
    """A server could not be started, checked or stopped; ``str()`` says why."""


@runtime_checkable
class Provisioner(Protocol):
    """What the scaler driver calls; one implementation per file in this folder."""

    kind: str

    async def start(self, name: str) -> str:
        """Start server ``name`` and wait until it accepts connections; return its ``host:port``."""
        ...

    async def stop(self, name: str) -> None:
        """Stop server ``name`` (unknown names are a no-op) and wait until it is gone."""
        ...

    async def ready(self, name: str) -> bool:
        """Whether server ``name`` accepts connections now (one check, no waiting)."""
        ...

    def running(self) -> dict[str, str]:
        """The servers this provisioner started and has not stopped: name -> ``host:port``."""
        ...

    async def aclose(self) -> None:
        """Stop everything still running (shutdown)."""
        ...


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ``ProvisionError`` when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProvisionError(f"bad address {address!r}: expected host:port")
    return host.strip("[]"), int(port)


async def accepts(address: str, connect_timeout_s: float = 1.0) -> bool:
    """One TCP connect to ``address``: True when it succeeds within ``connect_timeout_s``."""
    host, port = split_address(address)
    try:
        async with asyncio.timeout(connect_timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
