"""Test support: real loopback servers and an in-process proxy."""

from __future__ import annotations

import asyncio
import contextlib
import io
import pathlib
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson

from proxy.conf import load_config_text
from proxy.logs import Logger
from proxy.runtime import Runtime


class BackendProtocol(asyncio.Protocol):
    def __init__(self, server: Backend) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.eof = asyncio.Event()
        self.paused = asyncio.Event()
        self._data = asyncio.Event()

    async def wait_data(self) -> None:
        """Wait for the next chunk of data."""
        self._data.clear()
        await self._data.wait()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.append(self)
        self.server.connected.set()

    def data_received(self, data: bytes) -> None:
        self.received += data
        self._data.set()
        if self.server.mode == "echo":
            assert self.transport is not None
            self.transport.write(self.server.prefix + data)

    def eof_received(self) -> bool:
        self.eof.set()
        if self.server.mode == "echo":
            return False  # close after EOF (our side)
        return True

    def pause_writing(self) -> None:
        self.paused.set()

    def resume_writing(self) -> None:
        self.paused.clear()


class Backend:
    """A real TCP server on 127.0.0.1; ``echo`` answers ``<name>: <data>``, ``sink`` only records."""

    def __init__(self, name: str, mode: str = "echo") -> None:
        self.name = name
        self.mode = mode
        self.prefix = f"{name}: ".encode()
        self.conns: list[BackendProtocol] = []
        self.connected = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, port: int = 0) -> Backend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: BackendProtocol(self), "127.0.0.1", port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in self.conns:
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.abort()
            await self.server.wait_closed()
            self.server = None


def dead_port() -> int:
    """A port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(
    servers: Sequence[str],
    *,
    listener: str = "",
    pool: str = "",
    global_: str = "",
    admin: str = "admin: {bind: '127.0.0.1:0', token: secret}",
) -> str:
    lines = "\n".join(f"      - {{name: s{i + 1}, address: '{addr}'}}" for i, addr in enumerate(servers))
    return textwrap.dedent(
        f"""\
        global: {{tick_s: 0.05{", " + global_ if global_ else ""}}}
        listeners:
          - {{name: front, bind: '127.0.0.1:0', mode: tcp, pool: game{", " + listener if listener else ""}}}
        pools:
          - name: game
            health_check: {{enabled: false}}
        """
    ) + (f"    {pool}\n" if pool else "") + "    servers:\n" + lines + "\n" + admin + "\n"


@contextlib.asynccontextmanager
async def running_proxy(text: str, *, path: str | None = None) -> AsyncIterator[Runtime]:
    config = load_config_text(text, filename=path or "<test>")
    runtime = Runtime(config, log=Logger("debug", io.StringIO()), config_path=path)
    task = asyncio.create_task(runtime.run(install_signals=False))
    ready = asyncio.create_task(runtime.wait_ready())
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the startup error
    try:
        yield runtime
    finally:
        runtime.request_stop(hard=True)  # the test is over: do not wait for peers to hang up
        async with asyncio.timeout(10):
            await task


async def connect(runtime: Runtime, listener: str = "front", **kw) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = runtime.listener_address(listener)
    return await asyncio.open_connection(host, port, **kw)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bytes:
    writer.write(payload)
    await writer.drain()
    data = b""
    async with asyncio.timeout(5):
        while not data.endswith(payload):
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    return data


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class ProxyProcess:
    """``ferryman run -c PATH`` as a child process, its JSON log on stderr read with ``event``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, path: pathlib.Path, *, env: Mapping[str, str] | None = None) -> ProxyProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "-c", str(path), stderr=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT, env=env,
        )  # fmt: skip
        return cls(proc)

    async def event(self, name: str) -> dict[str, Any]:
        """The next log record with this ``event``."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(30):
            while line := await self.proc.stderr.readline():
                record = orjson.loads(line)
                if record.get("event") == name:
                    return record
        raise AssertionError(f"process ended before {name}")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

