"""Live migration under fire, with real backend processes.

Clients send numbered ``incr`` frames (a few in flight each) while connections are migrated
continuously between demo backends with different ``requires`` and backends are killed and restarted.
Every frame must get exactly one reply, in order, or an explicit ``unknown_outcome`` error; a
session's counter never goes backwards or skips.  This is the bounded CI version: ``python -m bench
migrate`` runs the long one.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from replay.demo_client import DemoBackendProcess, FramesClient
from tests.net.frames_support import frames_config
from tests.support import running_proxy

pytestmark = pytest.mark.usefixtures("frames_path")  # compiled and Python steady-state paths

CLIENTS = 12
FRAMES = 150
WINDOW = 4


class Progress:
    """Replies received by all clients; ``at(n)`` is set once ``n`` have arrived."""

    def __init__(self, marks: tuple[int, ...]) -> None:
        self.count = 0
        self.marks = {m: asyncio.Event() for m in marks}

    def add(self) -> None:
        self.count += 1
        event = self.marks.get(self.count)
        if event is not None:
            event.set()


async def _client(
    address: tuple[str, int], n: int, results: dict, progress: Progress, migrations_seen: asyncio.Event
) -> None:
    c = await FramesClient.open(address)
    sid = f"player-{n}"
    assert (await c.call({"op": "hello", "sid": sid}))["ok"] is True
    sent = 0
    received = []
    outstanding = 0
    while len(received) < FRAMES:
        if len(received) == FRAMES // 2:
            await migrations_seen.wait()  # some migrations surely happen with this session live
        while sent < FRAMES and outstanding < WINDOW:
            sent += 1
            c.send({"op": "incr", "key": "n", "seq": sent})
            outstanding += 1
        received.append(await c.recv())
        progress.add()
        outstanding -= 1
    results[sid] = received
    c.close()


async def test_migrations_and_kills_lose_duplicate_and_reorder_nothing() -> None:
    backends = [
        await DemoBackendProcess("s1", ("auth", "game")).start(),
        await DemoBackendProcess("s2", ("game",)).start(),
        await DemoBackendProcess("s3", ("auth", "game", "cart")).start(),
    ]
    rng = random.Random(7)
    health = "{enabled: true, interval_s: 0.05, timeout_s: 0.05, rise: 1, fall: 1}"
    config = frames_config(backends, health=health)
    total = CLIENTS * FRAMES
    progress = Progress((total // 3, 2 * total // 3))
    results: dict[str, list] = {}
    migrated = 0
    try:
        async with running_proxy(config) as rt:
            address = rt.listener_address("play")
            migrations_seen = asyncio.Event()
            clients = asyncio.gather(
                *(_client(address, n, results, progress, migrations_seen) for n in range(CLIENTS))
            )
            clients_task = asyncio.ensure_future(clients)

            async def migrate_forever() -> None:
                nonlocal migrated
                while True:
                    conns = rt.connections()
                    if not conns:
                        await asyncio.sleep(0)
                        continue
                    conn = rng.choice(conns)
                    target = rng.choice([b.name for b in backends])
                    try:
                        report = await rt.migrate_connection(conn["id"], target)
                    except (LookupError, ValueError):
                        await asyncio.sleep(0)
                        continue
                    if report["outcome"] == "committed":
                        migrated += 1
                        if migrated >= 3 * CLIENTS:
                            migrations_seen.set()
                    await asyncio.sleep(0)  # a deferred migration returns at once: let the others run

            async def kill_and_restart() -> None:
                for victim, mark in zip((backends[1], backends[0]), progress.marks.values(), strict=True):
                    await mark.wait()  # a third of the traffic, then two thirds
                    await victim.kill()
                    await victim.start()  # same port: the health checks bring it back

            migrator = asyncio.ensure_future(migrate_forever())
            killer = asyncio.ensure_future(kill_and_restart())
            try:
                async with asyncio.timeout(25):
                    await clients_task
            except BaseException:
                # What the proxy knew, for the failure report.
                print(rt.connections(), rt.migrations.as_dict(), rt.log.stream.getvalue()[-8000:], sep="\n")
                raise
            migrator.cancel()
            await killer
            stats = rt.migrations.as_dict()
    finally:
        for b in backends:
            await b.stop()
    assert stats["outcomes"]["committed"] >= 3 * CLIENTS
    unknown = 0
    for sid, replies in results.items():
        assert len(replies) == FRAMES, sid
        last_value = 0
        expected_seq = 1
        for reply in replies:
            if reply.get("error") == "unknown_outcome":
                unknown += 1
                expected_seq += 1
                continue
            assert "error" not in reply, (sid, reply)
            assert reply["seq"] == expected_seq, (sid, reply)  # in order, none lost or duplicated
            assert reply["value"] == last_value + 1, (sid, reply)  # never backwards, never skips
            last_value = reply["value"]
            expected_seq += 1
    assert unknown == stats["unknown_outcomes_total"]
