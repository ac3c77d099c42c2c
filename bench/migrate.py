"""``python -m bench migrate``: live migration of frames connections, measured.

Three parts, one run, the proxy on uvloop in this process and the demo game servers
(``replay.demo_backend``, the envelope dialect) as separate processes:

1. **pause and bytes**: one session holding 64 KiB of state in three partitions (``game`` 48 KiB,
   ``cart`` 12 KiB, ``auth`` 4 KiB) moves back and forth between a server that requires
   ``[auth, game, cart]`` and one that requires ``[auth, game]`` while its client keeps sending
   ``incr`` frames; every migration's pause (client gated to resumed, as the proxy measures it) and
   the bytes it pre-copied and replayed, against what replaying the whole session would send, and the
   bytes replayed during the pause alone (deltas from the pre-copied versions, docs/frames.md).
2. **rate**: many connections, migrated by several concurrent movers for a few seconds: committed
   migrations per second across the proxy.
3. **no loss under fire**: clients send numbered ``incr`` frames (a window in flight each) while
   connections migrate continuously and servers are killed and restarted; every frame must get exactly
   one reply in order or an explicit ``unknown_outcome``, and a session's counter must never go backwards
   or skip.  Runs until ``--migrations`` migrations have committed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import random
import time
from typing import Any

from bench._common import fmt_number, machine_info, markdown_table, write_results
from replay.demo_client import DemoBackendProcess, FramesClient, port_outside_ephemeral_range

STATE_PARTITIONS = {"game": 48 * 1024, "cart": 12 * 1024, "auth": 4 * 1024}


# -- plumbing -------------------------------------------------------------------------------------


def _config(servers: list[DemoBackendProcess], *, health: bool) -> str:
    lines = "\n".join(
        f"      - {{name: {s.name}, address: '127.0.0.1:{s.port}', requires: [{', '.join(s.requires)}]}}"
        for s in servers
    )
    check = "{enabled: true, interval_s: 0.1, timeout_s: 0.1, rise: 1, fall: 1}" if health else "{enabled: false}"
    return f"""
global: {{tick_s: 0.1, log_level: warning}}
listeners:
  - {{name: play, bind: '127.0.0.1:0', mode: frames, pool: game, max_connections: 100000}}
pools:
  - name: game
    balance: round_robin
    requires: [auth, game]
    migrations_per_s: 1000000
    health_check: {check}
    servers:
{lines}
"""


async def _proxy(text: str) -> tuple[Any, asyncio.Task[None]]:
    from proxy.conf import load_config_text
    from proxy.logs import Logger
    from proxy.runtime import Runtime

    runtime = Runtime(load_config_text(text, filename="<bench>"), log=Logger("warning", io.StringIO()))
    task = asyncio.create_task(runtime.run(install_signals=False))
    await runtime.wait_ready()
    return runtime, task


async def _stop_proxy(runtime: Any, task: asyncio.Task[None]) -> None:
    runtime.request_stop(hard=True)
    async with asyncio.timeout(10):
        await task


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _state_of(size: int, prefix: str) -> dict[str, str]:
    """About ``size`` bytes of msgpack: 64-byte values under short keys."""
    return {f"{prefix}{i:05d}": "x" * 56 for i in range(size // 64)}


# -- part 1: pause and bytes ----------------------------------------------------------------------


async def pause_and_bytes(servers: list[DemoBackendProcess], migrations: int) -> dict[str, Any]:
    from replay.canonical import canonical_packb

    runtime, task = await _proxy(_config(servers, health=False))
    try:
        sid = "heavy"
        for name, size in STATE_PARTITIONS.items():
            runtime.store.set_partition_data(sid, name, _state_of(size, name[0]))
        whole = sum(len(canonical_packb(runtime.store.get_partition_data(sid, n).data)) for n in STATE_PARTITIONS)
        client = await FramesClient.open(runtime.listener_address("play"))
        await client.call({"op": "hello", "sid": sid})
        (conn_id,) = [c["id"] for c in runtime.connections()]
        stop = asyncio.Event()
        replies = 0

        async def traffic() -> None:
            nonlocal replies
            n = 0
            while not stop.is_set():
                n += 1
                reply = await client.call({"op": "incr", "key": "k", "seq": n})
                assert reply.get("value") == n, reply
                replies += 1

        load = asyncio.create_task(traffic())
        pauses: list[float] = []
        selective: list[int] = []
        whole_session: list[int] = []
        paused: list[int] = []
        sizes = {n: runtime.store.get_partition_data(sid, n).canonical_size for n in STATE_PARTITIONS}
        outcomes: dict[str, int] = {}
        names = [s.name for s in servers[:2]]
        started = time.perf_counter()
        while len(pauses) < migrations:
            if load.done():
                break
            current = runtime.connections()[0]["server"]
            target = names[1] if current == names[0] else names[0]
            report = await runtime.migrate_connection(conn_id, target)
            outcomes[report["outcome"]] = outcomes.get(report["outcome"], 0) + 1
            if report["outcome"] == "committed":
                pauses.append(report["pause_s"])
                replayed = sum(report["replay_bytes"].values())
                paused.append(replayed)
                sent = sum(report["precopy_bytes"].values()) + replayed
                selective.append(sent)
                # Whole-session replay would also pre-copy what the target does not need.
                skipped = sum(sizes[n] for n in STATE_PARTITIONS if n not in report["precopy_bytes"])
                whole_session.append(sent + skipped)
            else:
                await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        stop.set()
        await load
        client.writer.close()
    finally:
        await _stop_proxy(runtime, task)
    return {
        "migrations": len(pauses),
        "outcomes": outcomes,
        "client_replies_during": replies,
        "elapsed_s": elapsed,
        "pause_p50_ms": _percentile(pauses, 0.5) * 1000,
        "pause_p99_ms": _percentile(pauses, 0.99) * 1000,
        "pause_max_ms": max(pauses) * 1000,
        "state_bytes": whole,
        "selective_bytes_per_migration": sum(selective) / len(selective),
        "whole_session_bytes_per_migration": sum(whole_session) / len(whole_session),
        "replay_bytes_per_migration": sum(paused) / len(paused),
    }


# -- part 2: rate ---------------------------------------------------------------------------------


async def rate(servers: list[DemoBackendProcess], connections: int, seconds: float, movers: int) -> dict[str, Any]:
    runtime, task = await _proxy(_config(servers, health=False))
    try:
        address = runtime.listener_address("play")
        clients = []
        for i in range(connections):
            c = await FramesClient.open(address)
            await c.call({"op": "hello", "sid": f"r{i}"})
            await c.call({"op": "login", "user": f"u{i}"})
            clients.append(c)
        ids = [c["id"] for c in runtime.connections()]
        names = [s.name for s in servers]
        committed = 0
        deferred = 0
        rng = random.Random(3)
        deadline = time.perf_counter() + seconds

        async def mover(k: int) -> None:
            nonlocal committed, deferred
            mine = ids[k::movers]
            i = 0
            while time.perf_counter() < deadline:
                conn_id = mine[i % len(mine)]
                i += 1
                target = rng.choice(names)
                report = await runtime.migrate_connection(conn_id, target)
                if report["outcome"] == "committed":
                    committed += 1
                else:
                    deferred += 1
                    await asyncio.sleep(0)

        started = time.perf_counter()
        await asyncio.gather(*(mover(k) for k in range(movers)))
        elapsed = time.perf_counter() - started
        # Every session still answers, from wherever it is now.
        for i, c in enumerate(clients):
            reply = await c.call({"op": "incr", "key": "k", "seq": 1})
            assert reply.get("value") == 1, (i, reply)
            c.writer.close()
        stats = runtime.migrations.as_dict()
    finally:
        await _stop_proxy(runtime, task)
    return {
        "connections": connections,
        "movers": movers,
        "elapsed_s": elapsed,
        "committed": committed,
        "not_committed": deferred,
        "migrations_per_s": committed / elapsed,
        "pause_avg_ms": (stats["pause_avg_s"] or 0) * 1000,
    }


# -- part 3: no loss under fire -------------------------------------------------------------------


async def torture(
    servers: list[DemoBackendProcess],
    *,
    clients: int,
    window: int,
    target_migrations: int,
    kill_every: int,
    movers: int,
) -> dict[str, Any]:
    runtime, task = await _proxy(_config(servers, health=True))
    rng = random.Random(11)
    results: dict[str, dict[str, int]] = {}
    violations: list[str] = []
    done = asyncio.Event()
    committed = 0
    kills = 0

    hellos = [asyncio.Event() for _ in range(clients)]

    async def client(n: int) -> None:
        c = await FramesClient.open(runtime.listener_address("play"))
        sid = f"t{n}"
        await c.call({"op": "hello", "sid": sid})
        hellos[n].set()
        sent = answered = unknown = last_value = 0
        expected_seq = 1
        outstanding = 0
        while not done.is_set() or outstanding:
            while not done.is_set() and outstanding < window:
                sent += 1
                c.send({"op": "incr", "key": "n", "seq": sent})
                outstanding += 1
            reply = await c.recv()
            outstanding -= 1
            if reply.get("error") == "unknown_outcome":
                unknown += 1
            elif reply.get("seq") != expected_seq or reply.get("value") != last_value + 1:
                violations.append(f"{sid}: expected seq {expected_seq} value {last_value + 1}, got {reply}")
                return
            else:
                last_value = reply["value"]
                answered += 1
            expected_seq += 1
        results[sid] = {"sent": sent, "answered": answered, "unknown": unknown}
        c.writer.close()

    async def migrate_forever(k: int) -> None:
        nonlocal committed, kills
        names = [s.name for s in servers]
        mine = random.Random(k)
        while committed < target_migrations:
            conn = mine.choice(runtime.connections())
            try:
                report = await runtime.migrate_connection(conn["id"], mine.choice(names))
            except (LookupError, ValueError):
                report = {"outcome": "refused"}
            if report["outcome"] == "committed":
                committed += 1
                if committed % kill_every == 0 and not killing.locked():
                    async with killing:  # one server down at a time
                        victim = rng.choice(servers)
                        await victim.kill()
                        await victim.start()
                        kills += 1
            await asyncio.sleep(0)
        done.set()

    killing = asyncio.Lock()

    started = time.perf_counter()
    try:
        workers = [asyncio.create_task(client(n)) for n in range(clients)]
        async with asyncio.timeout(30):
            await asyncio.gather(*(hello.wait() for hello in hellos))
        await asyncio.gather(*(migrate_forever(k) for k in range(movers)))
        async with asyncio.timeout(120):
            await asyncio.gather(*workers)
        stats = runtime.migrations.as_dict()
    finally:
        await _stop_proxy(runtime, task)
    elapsed = time.perf_counter() - started
    frames = sum(r["sent"] for r in results.values())
    return {
        "clients": clients,
        "window": window,
        "movers": movers,
        "elapsed_s": elapsed,
        "migrations_committed": stats["outcomes"]["committed"],
        "outcomes": stats["outcomes"],
        "server_kills": kills,
        "frames": frames,
        "replies": sum(r["answered"] for r in results.values()),
        "unknown_outcome_replies": sum(r["unknown"] for r in results.values()),
        "lost_duplicated_or_reordered": len(violations) + (clients - len(results)),
        "violations": violations[:10],
    }


# -- main -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(5)
    servers = [
        DemoBackendProcess("full", ("auth", "game", "cart"), port_outside_ephemeral_range(rng)),
        DemoBackendProcess("lean", ("auth", "game"), port_outside_ephemeral_range(rng)),
        DemoBackendProcess("tiny", ("game",), port_outside_ephemeral_range(rng)),
    ]
    for s in servers:
        await s.start()
    try:
        print("pause and bytes ...", flush=True)
        part1 = await pause_and_bytes(servers, args.pause_migrations)
        print("rate ...", flush=True)
        part2 = await rate(servers, args.connections, args.seconds, args.movers)
        print("no loss under fire ...", flush=True)
        part3 = await torture(
            servers,
            clients=args.clients,
            window=args.window,
            target_migrations=args.migrations,
            kill_every=args.kill_every,
            movers=args.movers,
        )
    finally:
        for s in servers:
            await s.stop()
    return {"pause": part1, "rate": part2, "torture": part3}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 15 s)")
    parser.add_argument("--pause-migrations", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--movers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--migrations", type=int, default=100_000)
    parser.add_argument("--kill-every", type=int, default=5000, help="kill and restart a server every N commits")
    args = parser.parse_args(argv)
    if args.quick:
        args.pause_migrations, args.connections, args.seconds = 200, 100, 2.0
        args.clients, args.migrations, args.kill_every = 16, 2000, 500
    import uvloop

    results = uvloop.run(run(args))
    p, r, t = results["pause"], results["rate"], results["torture"]
    rows = [
        ["pause p50 / p99 / max, 64 KiB of state (ms)",
         f"{p['pause_p50_ms']:.3f} / {p['pause_p99_ms']:.3f} / {p['pause_max_ms']:.3f}", "p50 <= 2, p99 <= 5"],
        ["bytes per migration: selective / whole session",
         f"{fmt_number(p['selective_bytes_per_migration'])} / {fmt_number(p['whole_session_bytes_per_migration'])}", ""],
        ["of which replayed during the pause", fmt_number(p["replay_bytes_per_migration"]), ""],
        [f"migrations per second ({r['connections']} connections, {r['movers']} movers)",
         fmt_number(r["migrations_per_s"]), ">= 2,000"],
        [f"migrations under fire ({t['server_kills']} server kills)", fmt_number(t["migrations_committed"]),
         ">= 100,000"],
        ["frames / replies / unknown outcome",
         f"{fmt_number(t['frames'])} / {fmt_number(t['replies'])} / {fmt_number(t['unknown_outcome_replies'])}", ""],
        ["lost, duplicated or reordered frames", str(t["lost_duplicated_or_reordered"]), "0"],
    ]  # fmt: skip
    table = markdown_table(["measure", "result", "goal"], rows)
    print(table)
    data = {"machine": machine_info(), "args": vars(args), **results}
    json_path, md_path = write_results("migrate", data, "# python -m bench migrate\n\n" + table)
    print(f"results: {json_path}  {md_path}")
    return 0 if t["lost_duplicated_or_reordered"] == 0 else 1
