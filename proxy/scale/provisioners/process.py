"""``process``: local backend processes started from a command template.

Each server is one child process.  The template is a list of arguments in which ``{port}``,
``{name}``, ``{host}`` and ``{python}`` (this interpreter) are replaced, for instance
``["{python}", "-m", "proxy", "demo-backend", "--port", "{port}", "--name", "{name}"]``.  Ports come
from ``ports`` (a range reserved for the fleet) or, without one, from the kernel (bind to port 0,
read the port, close; the child binds it an instant later).

``start`` returns when a TCP connect to ``host:port`` succeeds.  Readiness of a foreign process can
only be observed from outside, so it is checked with a backoff from 20 ms to 0.5 s, bounded by
``ready_timeout_s``; a child that exits first fails the start at once with its exit status.  ``stop``
sends SIGTERM, waits ``stop_timeout_s``, then kills.  A cancelled or failed ``start`` kills its child:
no process outlives the provisioner's knowledge of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO

from proxy.scale.provisioners.base import ProvisionError, accepts

_BACKOFF_FIRST_S = 0.02
_BACKOFF_MAX_S = 0.5


@dataclass
class _Child:
    proc: asyncio.subprocess.Process
    port: int
    address: str
    log: IO[bytes] | None


class ProcessProvisioner:
    kind = "process"

    def __init__(
        self,
        command: Sequence[str],
        *,
        host: str = "127.0.0.1",
        ports: Iterable[int] | None = None,
        ready_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        connect_timeout_s: float = 1.0,
        log_dir: pathlib.Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if not command:
            raise ValueError("command: must not be empty")
        if not any("{port}" in arg for arg in command):
            raise ValueError("command: must contain {port} (the server must listen where it is told)")
        self.command = list(command)
        self.host = host
        self._ports = list(ports) if ports is not None else None
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.log_dir = log_dir
        self.env = env
        self._children: dict[str, _Child] = {}

    def _port(self) -> int:
        if self._ports is None:
            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as sock:
                sock.bind((self.host, 0))
                return int(sock.getsockname()[1])
        taken = {c.port for c in self._children.values()}
        for port in self._ports:
            if port not in taken:
                return port
        raise ProvisionError(f"every port of the range is in use ({len(self._ports)} ports)")

    def argv(self, name: str, port: int) -> list[str]:
        values = {"port": str(port), "name": name, "host": self.host, "python": sys.executable}
        try:
            return [arg.format(**values) for arg in self.command]
        except (KeyError, IndexError, ValueError) as exc:
            raise ProvisionError(
                f"command template: {exc!r} (known fields: port, name, host, python)"
            ) from None

    def _open_log(self, name: str) -> IO[bytes] | None:
        """The child's stdout and stderr file (closed when the child is reaped); a small local append."""
        if self.log_dir is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"{name}.log", "ab")

    async def start(self, name: str) -> str:
        if name in self._children:
            raise ProvisionError(f"{name} is already running at {self._children[name].address}")
        port = self._port()
        argv = self.argv(name, port)
        address = f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"
        log = self._open_log(name)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log if log is not None else asyncio.subprocess.DEVNULL,
                stderr=log if log is not None else asyncio.subprocess.DEVNULL,
                env={**os.environ, **self.env} if self.env else None,
                start_new_session=True,  # a signal to the proxy's group does not reach the fleet
            )
        except OSError as exc:
            if log is not None:
                log.close()
            raise ProvisionError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        child = _Child(proc, port, address, log)
        self._children[name] = child
        try:
            await self._wait_ready(name, child)
        except BaseException:
            await self._terminate(name, kill_now=True)
            raise
        return address

    async def _wait_ready(self, name: str, child: _Child) -> None:
        delay = _BACKOFF_FIRST_S
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                while True:
                    if child.proc.returncode is not None:
                        raise ProvisionError(
                            f"{name} exited with status {child.proc.returncode} before accepting"
                        )
                    if await accepts(child.address, self.connect_timeout_s):
                        return
                    exited = asyncio.ensure_future(child.proc.wait())
                    try:
                        # Wake early when the child dies; otherwise back off before the next connect.
                        await asyncio.wait({exited}, timeout=delay)
                    finally:
                        if not exited.done():
                            exited.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await exited
                    delay = min(_BACKOFF_MAX_S, delay * 2)
        except TimeoutError:
            raise ProvisionError(
                f"{name} did not accept connections on {child.address} within {self.ready_timeout_s:g} s"
            ) from None

    async def stop(self, name: str) -> None:
        await self._terminate(name, kill_now=False)

    async def _terminate(self, name: str, *, kill_now: bool) -> None:
        child = self._children.pop(name, None)
        if child is None:
            return
        proc = child.proc
        try:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill() if kill_now else proc.terminate()
                try:
                    async with asyncio.timeout(self.stop_timeout_s):
                        await proc.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        finally:
            if child.log is not None:
                child.log.close()

    async def ready(self, name: str) -> bool:
        child = self._children.get(name)
        if child is None or child.proc.returncode is not None:
            return False
        return await accepts(child.address, self.connect_timeout_s)

    def running(self) -> dict[str, str]:
        return {name: c.address for name, c in self._children.items()}

    def pid(self, name: str) -> int | None:
        child = self._children.get(name)
        return None if child is None else child.proc.pid

    async def aclose(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for name in list(self._children):
                tg.create_task(self.stop(name))
