"""Active TCP health checks (the I/O half; decisions are in ``proxy.core.health``).

Every ``interval_s`` each server of a pool gets a TCP connect with a ``timeout_s`` deadline; the
result feeds the server's rise/fall tracker.  Checks of one round run concurrently, so a slow server
does not delay the others' checks.  One task per pool, owned by the runtime's task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.net.relay import describe_error

if TYPE_CHECKING:
    from proxy.runtime import PoolRuntime


async def tcp_check(host: str, port: int, timeout_s: float) -> str | None:
    """Return None when ``host:port`` accepts a TCP connection within the deadline, else why not."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return describe_error(exc) or "error"
    writer.close()
    try:
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        pass
    return None


async def run_checks(pool: PoolRuntime, on_change: Callable[[str, str, bool, str | None], None]) -> None:
    """Check ``pool``'s servers forever; ``on_change(pool, server, up, error)`` on each transition."""
    while True:
        settings = pool.settings.health_check
        if not settings.enabled:
            return
        targets = [(s.name, s.host, s.port) for s in pool.state.servers.values() if not s.retired]
        results = await asyncio.gather(*(tcp_check(h, p, settings.timeout_s) for _, h, p in targets))
        for (name, _, _), error in zip(targets, results, strict=True):
            if pool.state.observe_health(name, error is None, None if error is None else f"check: {error}"):
                server = pool.state.servers.get(name)
                if server is not None:
                    on_change(pool.name, name, server.health.up, error)
        await asyncio.sleep(settings.interval_s)
