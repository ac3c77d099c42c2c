"""A bare Python relay: two asyncio Protocols spliced on uvloop, and nothing else.

The reference column of ``python -m bench tcp`` ("bare Python relay"): no counters, placement,
health checks, timeouts or logs, so the gap between it and ferryman is what ferryman's features cost,
and the gap between it and HAProxy is what Python costs.

    python -m bench.pyrelay LISTEN_PORT:BACKEND_PORT ...      prints "ready" once every port listens
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

    # Backpressure both ways: a full write buffer on one side pauses reading on the other.
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
        self.task = loop.create_task(
            loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.backend_port)
        )
        self.task.add_done_callback(self.connect_done)

    def connect_done(self, task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.transport.close()

    def upstream_made(self, transport: asyncio.Transport) -> None:
        self.peer = transport
        if self.early:
            transport.write(bytes(self.early))
            self.early.clear()

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


async def serve(pairs: list[tuple[int, int]]) -> None:
    loop = asyncio.get_running_loop()
    for listen_port, backend_port in pairs:
        await loop.create_server(
            lambda b=backend_port: Client(b), "127.0.0.1", listen_port, backlog=4096, reuse_address=True
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    try:
        pairs = [(int(a), int(b)) for a, b in (arg.split(":") for arg in argv)]
    except ValueError:
        pairs = []
    if not pairs:
        print("usage: python -m bench.pyrelay LISTEN_PORT:BACKEND_PORT ...", file=sys.stderr)
        return 2
    uvloop.run(serve(pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
