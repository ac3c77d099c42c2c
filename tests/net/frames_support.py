"""A frames-mode client and in-process demo game servers, for the frames tests."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import msgpack

from replay.demo_backend import build_server
from replay.sdk import Server


class GameServer:
    """The demo game server (``replay.demo_backend``) on a real loopback port."""

    def __init__(self, name: str, requires: tuple[str, ...] = ()) -> None:
        self.name = name
        self.requires = requires
        self.server: Server = build_server(name, requires)
        self.port = 0

    async def start(self) -> GameServer:
        _, self.port = await self.server.start("127.0.0.1", 0)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.close()


class FramesClient:
    """A client of a frames listener: 4-byte big-endian length, msgpack maps."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: tuple[str, int]) -> FramesClient:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    def send(self, msg: Any) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.writer.write(len(body).to_bytes(4, "big") + body)

    async def recv(self) -> Any:
        async with asyncio.timeout(10):
            header = await self.reader.readexactly(4)
            body = await self.reader.readexactly(int.from_bytes(header, "big"))
        return msgpack.unpackb(body, raw=False, strict_map_key=False)

    async def call(self, msg: Any) -> Any:
        self.send(msg)
        return await self.recv()

    async def closed(self) -> bool:
        async with asyncio.timeout(10):
            return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


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
