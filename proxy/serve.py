"""Event-loop selection and the process entry point behind ``ferryman run``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from proxy.logs import Logger


def loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for or available (``auto``), else the default asyncio loop."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def serve(config: Any, *, config_path: str | None = None) -> int:
    """Run the proxy until it is stopped; returns the process exit code."""
    log = Logger.to_file(config.global_.log_level, config.global_.log_file)
    try:
        factory = loop_factory(config.global_.loop)
    except ImportError:
        log.error("loop_unavailable", loop=config.global_.loop)
        return 1
    code = 0
    with asyncio.Runner(loop_factory=factory) as runner:
        try:
            runner.run(_main(config, config_path, log))
        except* OSError as group:
            # Binding a listener or the admin socket failed (the task group wraps it).
            log.error("startup_failed", error="; ".join(str(e) for e in group.exceptions))
            code = 1
    log.close()
    return code


async def _main(config: Any, config_path: str | None, log: Logger) -> None:
    from proxy.runtime import Runtime

    runtime = Runtime(config, log=log, config_path=config_path)
    await runtime.run()
