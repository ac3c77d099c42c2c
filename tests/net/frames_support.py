"""In-process demo game servers and frames-listener configurations, for the frames tests."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

from replay.demo_backend import build_server
from replay.sdk import Server


class GameServer:
    """The demo game server (``replay.demo_backend``) on a real loopback port."""

    def __init__(self, name: str, requires: tuple[str, ...] = (), *, accept_proxy: bool = False) -> None:
        self.name = name
        self.requires = requires
        self.server: Server = build_server(name, requires, accept_proxy=accept_proxy)
        self.port = 0

    async def start(self) -> GameServer:
        _, self.port = await self.server.start("127.0.0.1", 0)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.close()


class LoopbackServer:
    """A hand-written test server on a loopback port, usable in ``frames_config`` like a ``GameServer``:
    subclasses set ``name`` (and ``requires``) and implement ``_serve``.  ``stop`` drops every
    connection in ``writers`` at once (a crash, as the proxy sees it); ``start`` again listens on the
    same port."""

    name: str
    requires: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Any:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()


def frames_config(
    servers: list[Any],
    *,
    pool: str = "",
    listener: str = "",
    extra: str = "",
    health: str = "{enabled: false}",
) -> str:
    lines = "\n".join(
        f"      - {{name: {s.name}, address: '{s.address}'"
        + (f", requires: [{', '.join(s.requires)}]" if s.requires else "")
        + "}"
        for s in servers
    )
    return (
        textwrap.dedent(
            f"""\
            global: {{tick_s: 0.05}}
            listeners:
              - {{name: play, bind: '127.0.0.1:0', mode: frames, pool: game{", " + listener if listener else ""}}}
            pools:
              - name: game
                health_check: {health}
                requires: [auth, game]
            """
        )
        + (f"    {pool}\n" if pool else "")
        + "    servers:\n"
        + lines
        + "\nadmin: {bind: '127.0.0.1:0', token: secret}\n"
        + extra
    )
