"""``ferryman demo``: the proxy, a few demo game servers and a little load, all on loopback.

The demo game servers run as separate processes (``ferryman demo-backend``, the envelope-dialect
server of ``replay.demo_backend``), each declaring the session-state partitions it needs.  Each
simulated player opens a session (``hello``), logs in, and keeps incrementing a counter and filling a
cart; placement hashes the session id.  Every few seconds the demo moves a live connection to another
server and prints what the migration replayed and how long the player was paused.  Ctrl-C stops the
load, drains the proxy and stops the servers.
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
from typing import Any

from proxy.conf import load_config_text
from proxy.logs import Logger
from proxy.serve import loop_factory

BANNER = """\
ferryman demo is running on loopback
  proxy      {proxy}   (frames mode, consistent hashing on the session id)
  backends   {backends}
  admin      {admin}
    curl {admin}/backends
    curl {admin}/connections
    curl {admin}/sessions/player-0/partitions
    curl {admin}/stats
    curl -X POST -H 'Authorization: Bearer demo' -d '{{"target":"b2"}}' {admin}/connections/<id>/migrate
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


# -- the demo ----------------------------------------------------------------------------------


#: What each demo server needs replayed when a session moves to it (b1, b2, b3, then again).
REQUIRES = ("auth,game", "auth,game,cart", "game")


async def _start_backend(name: str, requires: str) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "demo-backend", "--port", "0", "--name", name, "--requires", requires,
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
    """One player: a session that lives across reconnects, a counter and a cart."""
    from replay.demo_client import FramesClient

    sid = f"player-{i}"
    while True:
        try:
            client = await FramesClient.open(("127.0.0.1", port), timeout_s=10.0)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            await client.call({"op": "hello", "sid": sid})
            await client.call({"op": "login", "user": f"user{i}"})
            for n in range(rng.randint(20, 200)):
                if rng.random() < 0.1:
                    reply = await client.call({"op": "cart_add", "item": f"item{n}"})
                else:
                    reply = await client.call({"op": "incr", "key": "score", "seq": n})
                seen[str(reply.get("server"))] += 1
                await asyncio.sleep(rng.uniform(0.02, 0.2))
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            await asyncio.sleep(0.2)
        finally:
            client.close()


async def _migrate_now_and_then(runtime: Any, names: list[str], rng: random.Random, every_s: float) -> None:
    """Move a random live connection to another server, and say what it cost."""
    while True:
        await asyncio.sleep(every_s)
        conns = runtime.connections()
        if not conns:
            continue
        conn = rng.choice(conns)
        target = rng.choice([n for n in names if n != conn["server"]] or names)
        try:
            r = await runtime.migrate_connection(conn["id"], target)
        except (LookupError, ValueError) as exc:
            print(f"  migration of connection {conn['id']} to {target} refused: {exc}", flush=True)
            continue
        if r["outcome"] == "committed":
            print(
                f"  moved {r['sid']} {r['source']} -> {r['target']}: paused {r['pause_s'] * 1000:.2f} ms, "
                f"replayed {sorted(r['precopy_bytes'])} of {r['partitions_present']} partitions",
                flush=True,
            )
        else:
            print(f"  migration of {r.get('sid')} to {target}: {r['outcome']} ({r.get('cause')})", flush=True)


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
            proc, backend_port = await _start_backend(f"b{i + 1}", REQUIRES[i % len(REQUIRES)])
            procs.append(proc)
            ports.append(backend_port)
        servers = "\n".join(
            f"        - {{name: b{i + 1}, address: 127.0.0.1:{p}, requires: [{REQUIRES[i % len(REQUIRES)]}]}}"
            for i, p in enumerate(ports)
        )
        text = f"""
global: {{log_level: warning, drain_timeout_s: 5}}
listeners:
  - {{name: demo, bind: "127.0.0.1:{_free_or_default(port)}", mode: frames, pool: demo}}
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
            every_s = 5.0 if duration_s is None else max(duration_s / 2, 0.5)
            report = tg.create_task(_report(runtime, seen, every_s))
            names = [f"b{i + 1}" for i in range(backends)]
            mover = tg.create_task(_migrate_now_and_then(runtime, names, rng, every_s / 2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration_s):
                    await stop.wait()
            print("stopping: load, then a graceful drain of the proxy", flush=True)
            for task in (*load, report, mover):
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
