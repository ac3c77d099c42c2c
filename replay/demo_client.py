"""Driving the demo game server from Python: a frames client and the server as a child process.

Used by the demo, the benchmarks and the tests, and handy for trying a frames listener by hand::

    server = await DemoBackendProcess("s1", requires=("auth", "game")).start()
    client = await FramesClient.open(("127.0.0.1", 7000))
    await client.call({"op": "hello", "sid": "player-1"})

``FramesClient`` speaks the default framing of a frames listener (4-byte big-endian length) with
msgpack maps as bodies, which is what the demo game server understands (``replay.demo_backend``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import sys
from typing import Any

import msgpack

__all__ = ["DemoBackendProcess", "FramesClient", "port_outside_ephemeral_range"]


class FramesClient:
    """A client of a frames listener: 4-byte big-endian length, then a msgpack map."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float = 30.0) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout_s = timeout_s

    @classmethod
    async def open(cls, address: tuple[str, int], timeout_s: float = 30.0) -> FramesClient:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer, timeout_s)

    def send(self, msg: Any) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.writer.write(len(body).to_bytes(4, "big") + body)

    async def recv(self) -> Any:
        """The next frame, decoded; TimeoutError after ``timeout_s``, IncompleteReadError at EOF."""
        async with asyncio.timeout(self.timeout_s):
            header = await self.reader.readexactly(4)
            body = await self.reader.readexactly(int.from_bytes(header, "big"))
        return msgpack.unpackb(body, raw=False, strict_map_key=False)

    async def call(self, msg: Any) -> Any:
        self.send(msg)
        return await self.recv()

    async def closed(self) -> bool:
        """True once the proxy closed the connection (after any frames still unread)."""
        async with asyncio.timeout(self.timeout_s):
            return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


def port_outside_ephemeral_range(rng: random.Random | None = None) -> int:
    """A free port below the range the kernel picks outgoing ports from, so that a server killed and
    restarted on it gets it back (an outgoing connection could otherwise have taken it meanwhile)."""
    rng = rng or random.Random()
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except OSError:
        low = 32768
    while True:
        port = rng.randrange(max(1024, low - 8000), low)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class DemoBackendProcess:
    """The demo game server in a child process (``python -m replay.demo_backend``) on 127.0.0.1.

    ``port`` 0 picks a free port outside the ephemeral range on the first ``start``; later starts
    (after ``kill`` or ``stop``) reuse it.
    """

    def __init__(self, name: str, requires: tuple[str, ...] = (), port: int = 0) -> None:
        self.name = name
        self.requires = requires
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 20.0) -> DemoBackendProcess:
        if not self.port:
            self.port = port_outside_ephemeral_range()
        args = [sys.executable, "-m", "replay.demo_backend", "--port", str(self.port), "--name", self.name]
        if self.requires:
            args += ["--requires", ",".join(self.requires)]
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            line = (await self.proc.stdout.readline()).decode()
            if not line.startswith("listening "):
                code = await self.proc.wait()
                raise RuntimeError(f"demo backend {self.name} did not start on port {self.port} (exit {code})")
        return self

    async def kill(self) -> None:
        """SIGKILL: the server dies without closing anything itself."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
