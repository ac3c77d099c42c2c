"""``ferryman demo``: the proxy, a few demo backends and a little load, all on loopback.

The demo backends run as separate processes (``ferryman demo-backend``).  Each simulated client
connects from its own loopback address (127.0.0.2, 127.0.0.3, ...) so that placement by client IP
spreads them over the backends the way real clients would spread; the summary shows where each
landed.  Ctrl-C stops the load, drains the proxy and stops the backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import sys
import time
from collections import Counter

from proxy.conf import load_config_text
from proxy.logs import Logger
from proxy.serve import loop_factory

BANNER = """\
ferryman demo is running on loopback
  proxy      {proxy}   (tcp mode, consistent hashing on client IP)
  backends   {backends}
  admin      {admin}
    curl {admin}/backends
    curl {admin}/stats
    curl {admin}/metrics
    curl -X POST -H 'Authorization: Bearer demo' -d '{{"state":"drain"}}' {admin}/backends/demo/b1/state
Press Ctrl-C to stop.
"""


def _free_or_default(port: int) -> int:
    """``port`` if it can be bound on 127.0.0.1 right now, else 0 (any free port)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


# -- the demo backend --------------------------------------------------------------------------


class _EchoNamed(asyncio.Protocol):
    """Answers every read with ``<name>: <bytes read>``."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.prefix + data)


async def _backend_main(host: str, port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: _EchoNamed(f"{name}: ".encode()), host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]}:{bound[1]} name={name}", flush=True)
    async with server:
        await stop.wait()


def run_backend(host: str, port: int, name: str, requires: tuple[str, ...] = ()) -> int:
    """A small TCP demo server: every read is answered with the server's name and the bytes read."""
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        try:
            runner.run(_backend_main(host, port, name))
        except OSError as exc:
            print(f"demo-backend {name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0


# -- the demo ----------------------------------------------------------------------------------


async def _start_backend(name: str) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "demo-backend", "--port", "0", "--name", name,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(15):
        line = (await proc.stdout.readline()).decode()
    if not line.startswith("listening "):
        raise RuntimeError(f"demo backend {name} did not start")
    port = int(line.split()[1].rsplit(":", 1)[1])
    return proc, port


async def _client(i: int, port: int, seen: Counter[str], rng: random.Random) -> None:
    source = f"127.0.0.{2 + i % 250}"
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            for n in range(rng.randint(5, 40)):
                writer.write(f"client {i} message {n}\n".encode())
                await writer.drain()
                reply = await reader.readuntil(b"\n")
                seen[reply.split(b":", 1)[0].decode()] += 1
                await asyncio.sleep(rng.uniform(0.02, 0.2))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def _report(runtime: object, seen: Counter[str], every_s: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        pool = runtime.describe_pool("demo")  # type: ignore[attr-defined]
        parts = [
            f"{s['name']}={s['active_connections']} conns/{seen[s['name']]} replies ({s['state']}, {s['health']})"
            for s in pool["servers"]
        ]
        print(f"[{time.monotonic() - started:6.1f}s] " + "  ".join(parts), flush=True)


async def _demo(backends: int, clients: int, port: int, admin_port: int, duration_s: float | None) -> int:
    from proxy.runtime import Runtime

    procs: list[asyncio.subprocess.Process] = []
    try:
        ports = []
        for i in range(backends):
            proc, backend_port = await _start_backend(f"b{i + 1}")
            procs.append(proc)
            ports.append(backend_port)
        servers = "\n".join(
            f"        - {{name: b{i + 1}, address: 127.0.0.1:{p}}}" for i, p in enumerate(ports)
        )
        text = f"""
global: {{log_level: warning, drain_timeout_s: 5}}
listeners:
  - {{name: demo, bind: "127.0.0.1:{_free_or_default(port)}", mode: tcp, pool: demo}}
pools:
  - name: demo
    balance: consistent
    health_check: {{interval_s: 1.0, timeout_s: 0.5}}
    servers:
{servers}
admin: {{bind: "127.0.0.1:{_free_or_default(admin_port)}", token: demo}}
"""
        config = load_config_text(text, filename="<demo>")
        runtime = Runtime(config, log=Logger("warning"))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        seen: Counter[str] = Counter()
        rng = random.Random(7)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(runtime.run(install_signals=False))
            await runtime.wait_ready()
            host, proxy_port = runtime.listener_address("demo")
            print(
                BANNER.format(
                    proxy=f"{host}:{proxy_port}",
                    backends=", ".join(f"b{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports)),
                    admin=runtime.admin.url,
                ),
                flush=True,
            )
            load = [tg.create_task(_client(i, proxy_port, seen, rng)) for i in range(clients)]
            report = tg.create_task(_report(runtime, seen, 5.0 if duration_s is None else max(duration_s / 2, 0.5)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration_s):
                    await stop.wait()
            print("stopping: load, then a graceful drain of the proxy", flush=True)
            for task in (*load, report):
                task.cancel()
            runtime.request_stop()
        print(f"replies per backend: {dict(sorted(seen.items()))}", flush=True)
        return 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def run_demo(
    *, backends: int = 3, clients: int = 24, port: int = 7000, admin_port: int = 7900, duration_s: float | None = None
) -> int:
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        return runner.run(_demo(backends, clients, port, admin_port, duration_s))
