"""A bare Python relay: two asyncio Protocols on uvloop and nothing else.

The reference line in ``bench/tcp.py`` ("what Python can do"): no counters, no placement, no
health, no timeouts.  ``python -m bench.pyrelay LISTEN_PORT:BACKEND_PORT ...``.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client.upstream_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class Client(asyncio.Protocol):
    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.peer: asyncio.Transport | None = None
        self.early = bytearray()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.backend_port))

    def upstream_made(self, transport: asyncio.Transport) -> None:
        self.peer = transport
        if self.early:
            transport.write(bytes(self.early))

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)
        else:
            self.early += data

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()
        else:
            self.task.cancel()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()


async def main(pairs: list[tuple[int, int]]) -> None:
    loop = asyncio.get_running_loop()
    for listen_port, backend_port in pairs:
        await loop.create_server(
            lambda b=backend_port: Client(b), "127.0.0.1", listen_port, backlog=4096, reuse_address=True
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    pairs = [(int(a), int(b)) for a, b in (arg.split(":") for arg in sys.argv[1:])]
    uvloop.run(main(pairs))
