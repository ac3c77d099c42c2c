"""The scaler driving a live proxy: demo backends started as processes, sessions moved while in use.

Clients keep a few numbered ``incr`` frames in flight each while ``scale_servers`` scales the pool
out (two backend processes start, the sessions consistent hashing now gives them move there) and
back in (servers drained, their sessions moved off, their processes stopped).  Every frame must get
exactly one reply, in order, from whichever server holds the session; a session's counter never
skips or goes back.  Every wait is on a real condition (a step, a migration pump, replies).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from replay.demo_client import FramesClient
from tests.net.frames_support import GameServer, frames_config
from tests.support import running_proxy

CLIENTS = 12
WINDOW = 4

SCALE = """\
scale:
  pool: game
  step_s: 0.2
  capacity: 1000000000     # automatic decisions never want more than min_servers: the test scales by hand
  max_servers: 4
  migrations_per_s: 500
  drain_timeout_s: 30
  provisioner:
    kind: process
    command: ['{python}', '-m', 'proxy', 'demo-backend', '--port', '{port}', '--name', '{name}',
              '--requires', 'auth,game']
    ready_timeout_s: 20
    stop_timeout_s: 5
"""


class Replies:
    """Replies received by all clients; ``reach(n)`` waits until ``n`` have arrived."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self) -> None:
        self.count += 1
        for n, fut in list(self._waiters):
            if self.count >= n and not fut.done():
                fut.set_result(None)

    async def reach(self, n: int) -> None:
        if self.count >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        finally:
            self._waiters.remove((n, fut))


async def _client(
    address: tuple[str, int], n: int, stop: asyncio.Event, replies: Replies, results: dict, seen: dict
) -> None:
    c = await FramesClient.open(address)
    sid = f"player-{n}"
    assert (await c.call({"op": "hello", "sid": sid}))["ok"] is True
    sent = last_value = outstanding = 0
    expected_seq = 1
    servers: list[str] = []
    while True:
        while outstanding < WINDOW and not stop.is_set():
            sent += 1
            c.send({"op": "incr", "key": "n", "seq": sent})
            outstanding += 1
        if outstanding == 0:
            break
        reply = await c.recv()
        outstanding -= 1
        assert "error" not in reply, (sid, reply)
        assert reply["seq"] == expected_seq, (sid, reply)  # in order, none lost or duplicated
        assert reply["value"] == last_value + 1, (sid, reply)  # never skips, never goes back
        expected_seq += 1
        last_value = reply["value"]
        if not servers or servers[-1] != reply["server"]:
            servers.append(reply["server"])
        replies.add()
    c.close()
    results[sid] = (sent, last_value)
    seen[sid] = servers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_scale_out_and_in_moves_live_sessions_without_losing_a_frame() -> None:
    s1 = await GameServer("s1", ("auth", "game")).start()
    results: dict[str, tuple[int, int]] = {}
    seen: dict[str, list[str]] = {}
    replies = Replies()
    stop = asyncio.Event()
    pids: dict[str, int] = {}
    try:
        async with running_proxy(frames_config([s1], extra=SCALE)) as rt, asyncio.timeout(20):
            scaling = rt.scaling
            fleet, scaler, provisioner = scaling.fleet, scaling.scaler, scaling.provisioner
            state = rt.pools["game"].state

            async def until(predicate: Callable[[], bool]) -> None:
                await scaling.wait_until(predicate)

            def settled() -> bool:
                """Every session is where placement puts it, and nothing is being moved."""
                conns = fleet.connections()
                return (
                    len(conns) == CLIENTS
                    and not scaler.status()["migrations"]["onto"]
                    and not scaler.status()["migrations"]["off"]
                    and all(fleet.place(c.key) == c.server for c in conns)
                )

            address = rt.listener_address("play")
            clients = asyncio.gather(*(_client(address, n, stop, replies, results, seen) for n in range(CLIENTS)))
            clients_task = asyncio.ensure_future(clients)
            try:
                await replies.reach(CLIENTS * 20)
                assert {c.server for c in fleet.connections()} == {"s1"}

                # Scale out to three servers: two demo backends start as processes.
                out = await rt.scale_servers(3)
                assert out["target_capacity"] == 3
                assert [(a["action"], a["count"]) for a in out["actions"]] == [("provision", 2)]
                await scaler.wait_provisioned()
                assert set(provisioner.running()) == {"scale-1", "scale-2"}
                pids = {name: provisioner.pid(name) for name in provisioner.running()}
                assert all(state.servers[name].eligible for name in pids)
                # The next step sees them ready; the sessions hashing gives them move there, live.
                await until(lambda: scaler.migrations_total > 0 and settled())
                on = {c.server for c in fleet.connections()}
                assert {"scale-1", "scale-2"} <= on, on
                moved = scaler.migrations_total - scaler.migrations_failed_total
                assert moved >= 1 and rt.migrations.as_dict()["outcomes"]["committed"] >= moved
                mark = replies.count
                await replies.reach(mark + CLIENTS * 20)  # traffic flows through the new servers
                assert state.servers["scale-1"].frames_total > 0 and state.servers["scale-2"].frames_total > 0

                # Scale in to one server: two are drained, their sessions moved off, then stopped.
                out = await rt.scale_servers(1)
                drain = next(a for a in out["actions"] if a["action"] == "drain")
                drained = set(drain["names"])
                assert len(drained) == 2
                (kept,) = {"s1", "scale-1", "scale-2"} - drained
                stopped = drained - {"s1"}  # a configured server stays in the pool, drained
                await until(
                    lambda: not (stopped & set(provisioner.running()))
                    and not (stopped & set(state.servers))
                    and settled()
                )
                assert {c.server for c in fleet.connections()} == {kept}
                assert scaler.status()["managed_servers"] == {kept: "ready"}
                for name in stopped:
                    assert not _alive(pids[name])  # the process is gone
                if "s1" in drained:
                    assert state.servers["s1"].admin.value == "drain"
                mark = replies.count
                await replies.reach(mark + CLIENTS * 10)
            except BaseException:
                # What the proxy and the scaler knew, for the failure report.
                placement = [(c.conn_id, c.server, fleet.place(c.key)) for c in fleet.connections()]
                print(placement, scaler.status(), rt.migrations.as_dict(), rt.log.stream.getvalue()[-6000:], sep="\n")
                raise
            finally:
                stop.set()
            await clients_task
            stats = rt.migrations.as_dict()
            assert stats["unknown_outcomes_total"] == 0
            still_running = {name: provisioner.pid(name) for name in provisioner.running()}
        # Leaving the proxy stops every server the scaler started.
        for pid in still_running.values():
            assert pid is not None and not _alive(pid)
    finally:
        await s1.stop()
    assert len(results) == CLIENTS
    for sid, (sent, last_value) in results.items():
        assert last_value == sent, sid  # every frame answered exactly once
    moved_sessions = [sid for sid, servers in seen.items() if len(servers) > 1]
    assert moved_sessions, seen
