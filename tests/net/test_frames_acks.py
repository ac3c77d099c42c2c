"""frames listeners with ``send_acks``: ack envelopes to real SDK backends, against a real durable store."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from replay.demo_client import FramesClient
from replay.sdk import Server, Session
from replay.store import DurableStore
from replay.store.records import FILE_HEADER_BYTES, RECORD_HEADER_BYTES, iter_records
from tests.support import ProxyProcess, running_proxy

pytestmark = pytest.mark.usefixtures("frames_path")  # compiled and Python steady-state paths


@dataclass(frozen=True, slots=True)
class AckSeen:
    seq: int
    applied: int  # the highest seq this backend had applied for the session when the ack arrived
    durable_seq: int  # the proxy store's durable_seq when the ack arrived


class Recorder:
    """An SDK backend on a real socket: ``add`` raises ``game["n"]`` (a delta), any other op only reads.
    It records every ack and what it had applied when the ack came."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = Server(name, requires=("game",), on_ack=self._on_ack)
        self.server.handler(self._handle)
        self.port = 0
        self.durable_seq = lambda: 0  # set once the proxy runs
        self.acks: dict[str, list[AckSeen]] = {}
        self.applied: dict[str, int] = {}
        self.first: dict[str, int] = {}  # sid -> first seq applied here
        self.n_after: dict[tuple[str, int], int] = {}  # (sid, seq) -> game["n"] after that request
        self.requires_ack: dict[str, bool] = {}
        self.changed = asyncio.Event()

    async def _handle(self, session: Session, body: bytes) -> bytes:
        msg = msgpack.unpackb(body, raw=False)
        game = session.state["game"]
        if msg.get("op") == "add":
            game["n"] = game.get("n", 0) + 1
        n = game.get("n", 0)
        sid, seq = session.sid, session.seq
        self.first.setdefault(sid, seq)
        self.applied[sid] = seq
        self.n_after[(sid, seq)] = n
        self.requires_ack[sid] = session.requires_ack
        return msgpack.packb({"seq": seq, "n": n, "server": self.name})

    def _on_ack(self, session: Session, seq: int) -> None:
        assert session.acked_seq == seq
        seen = AckSeen(seq, self.applied.get(session.sid, 0), self.durable_seq())
        self.acks.setdefault(session.sid, []).append(seen)
        self.changed.set()

    def acked(self, sid: str) -> int:
        seen = self.acks.get(sid)
        return seen[-1].seq if seen else 0

    async def wait_acked(self, sid: str, seq: int) -> None:
        async with asyncio.timeout(20):
            while self.acked(sid) < seq:
                self.changed.clear()
                await self.changed.wait()

    async def start(self) -> Recorder:
        _, self.port = await self.server.start("127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        await self.server.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def config(
    pools: dict[str, tuple[list[Recorder], str]], *, store: str = "", tick_s: float = 0.05
) -> str:
    """One frames listener per pool (named after it); ``pools`` maps a pool to its servers and extra keys."""
    listeners = "".join(
        f"  - {{name: {name}, bind: '127.0.0.1:0', mode: frames, pool: {name}}}\n" for name in pools
    )
    text = f"global: {{tick_s: {tick_s}}}\nlisteners:\n{listeners}pools:\n"
    for name, (servers, extra) in pools.items():
        text += f"  - name: {name}\n    health_check: {{enabled: false}}\n    requires: [game]\n"
        if extra:
            text += f"    {extra}\n"
        text += "    servers:\n" + "".join(f"      - {{name: {s.name}, address: '{s.address}'}}\n" for s in servers)
    return text + (store + "\n" if store else "")


def durable_store(directory: Path) -> str:
    return f"store: {{kind: local, directory: '{directory}', fsync: "


def durable_prefix(directory: Path, durable_seq: int, into: Path) -> DurableStore:
    """What a power loss at ``durable_seq`` would leave of the store: its log cut after that commit."""
    into.mkdir()
    for path in sorted(directory.iterdir()):
        if path.name.startswith("snap-") and path.name.endswith(".snap"):
            if int(path.name[5:25]) <= durable_seq:
                shutil.copy(path, into / path.name)
        elif path.name.startswith("seg-") and path.name.endswith(".log"):
            if int(path.name[4:24]) > durable_seq:
                continue
            buf = path.read_bytes()
            end = FILE_HEADER_BYTES
            for offset, payload, error in iter_records(buf, FILE_HEADER_BYTES):
                if error is not None or msgpack.unpackb(payload, strict_map_key=False)[0] > durable_seq:
                    break
                end = offset + RECORD_HEADER_BYTES + len(payload)
            (into / path.name).write_bytes(buf[:end])
    return DurableStore(into, fsync="off")


def stored_n(store: DurableStore, sid: str) -> int:
    state = store.get_partition_data(sid, "game")
    return 0 if state is None else state.data.get("n", 0)


def check_acks(backend: Recorder, sid: str) -> list[int]:
    """Acks rise strictly, never above what the backend had applied, nor below the first seq it
    applied; returns them."""
    seen = backend.acks.get(sid, [])
    seqs = [a.seq for a in seen]
    assert seqs == sorted(set(seqs)), seqs
    assert all(backend.first[sid] <= a.seq <= a.applied for a in seen), seen
    return seqs


def check_durable(backend: Recorder, sid: str, directory: Path, scratch: Path) -> None:
    """The state every ack claims was in the part of the store that would survive a power loss."""
    for i, ack in enumerate(backend.acks.get(sid, [])):
        store = durable_prefix(directory, ack.durable_seq, scratch / f"{backend.name}-{i}")
        try:
            assert stored_n(store, sid) >= backend.n_after[(sid, ack.seq)], ack
        finally:
            store.close()


@pytest.mark.parametrize("fsync", ["batch", "always"])
async def test_acks_tell_the_backend_what_the_store_made_durable(tmp_path: Path, fsync: str) -> None:
    backend = await Recorder("s1").start()
    directory = tmp_path / "state"
    # Ticks faster than the batch fsync interval (50 ms): most commits wait for a later fsync.
    text = config({"play": ([backend], "send_acks: true")}, store=durable_store(directory) + fsync + "}", tick_s=0.01)
    requests = 32
    try:
        async with running_proxy(text) as rt:
            backend.durable_seq = lambda: rt.store.durable_seq
            c = await FramesClient.open(rt.listener_address("play"))
            assert (await c.call({"op": "hello", "sid": "p1"}))["seq"] == 1
            for seq in range(2, requests + 1):
                op = "read" if seq % 4 == 0 else "add"  # the last one has no deltas
                assert (await c.call({"op": op}))["seq"] == seq
                if seq % 8 == 0:
                    # Wait for the ack before going on: the next requests' commits then come soon
                    # after an fsync, so with fsync batch they wait for a later one.
                    await backend.wait_acked("p1", seq)
            (server,) = rt.describe_pool("play")["servers"]
            assert server["acks_total"] == len(backend.acks["p1"])
            c.close()
    finally:
        await backend.stop()
    assert backend.requires_ack["p1"] is True
    seqs = check_acks(backend, "p1")
    assert seqs[-1] == requests
    check_durable(backend, "p1", directory, tmp_path)
    with DurableStore(directory) as store:
        assert stored_n(store, "p1") == backend.n_after[("p1", requests)] == 23


async def test_without_send_acks_nothing_is_asked_or_sent(tmp_path: Path) -> None:
    acking, quiet = await Recorder("a1").start(), await Recorder("q1").start()
    text = config(
        {"play": ([acking], "send_acks: true"), "quiet": ([quiet], "")},
        store=durable_store(tmp_path / "state") + "always}",
    )
    try:
        async with running_proxy(text) as rt:
            q = await FramesClient.open(rt.listener_address("quiet"))
            await q.call({"op": "hello", "sid": "q"})
            for _ in range(10):
                await q.call({"op": "add"})
            # Once the other pool's session is acknowledged, ticks with commits have covered the
            # quiet session's requests too: had it been acknowledged, the proxy would have sent it then.
            a = await FramesClient.open(rt.listener_address("play"))
            await a.call({"op": "hello", "sid": "a"})
            assert (await a.call({"op": "add"}))["seq"] == 2
            await acking.wait_acked("a", 2)
            (quiet_server,) = rt.describe_pool("quiet")["servers"]
            assert quiet_server["acks_total"] == 0
            assert {c.sid for c in rt.ack_clients} == {"a"}
            q.close()
            a.close()
    finally:
        await acking.stop()
        await quiet.stop()
    assert quiet.requires_ack == {"q": False} and quiet.acks == {}
    assert acking.requires_ack == {"a": True}


async def test_acks_continue_on_the_target_of_a_live_migration(tmp_path: Path) -> None:
    s1, s2 = await Recorder("s1").start(), await Recorder("s2").start()
    directory = tmp_path / "state"
    text = config(
        {"play": ([s1, s2], "send_acks: true\n    balance: round_robin")},
        store=durable_store(directory) + "batch}",
        tick_s=0.01,
    )
    try:
        async with running_proxy(text) as rt:
            s1.durable_seq = s2.durable_seq = lambda: rt.store.durable_seq
            c = await FramesClient.open(rt.listener_address("play"))
            assert (await c.call({"op": "hello", "sid": "m"}))["server"] == "s1"
            for _ in range(9):
                await c.call({"op": "add"})
            await s1.wait_acked("m", 10)
            # Requests in flight while the migration starts: the source answers some of them while it
            # is being fenced (the migration writes their deltas), the target gets the others.
            for _ in range(5):
                c.send({"op": "add"})
            (conn_id,) = [x["id"] for x in rt.connections()]
            report = await rt.migrate_connection(conn_id, "s2")
            replies = [await c.recv() for _ in range(5)]
            assert report["outcome"] == "committed", report
            assert [r["seq"] for r in replies] == list(range(11, 16))
            for seq in range(16, 26):
                reply = await c.call({"op": "add" if seq % 2 else "read"})
                assert (reply["seq"], reply["server"]) == (seq, "s2")
            await s2.wait_acked("m", 25)
            servers = {s["name"]: s for s in rt.describe_pool("play")["servers"]}
            assert servers["s1"]["acks_total"] == len(s1.acks["m"])
            assert servers["s2"]["acks_total"] == len(s2.acks["m"])
            c.close()
    finally:
        await s1.stop()
        await s2.stop()
    assert s1.requires_ack["m"] is True and s2.requires_ack["m"] is True
    # The source was acknowledged only what it applied; the target from its first request on.
    assert check_acks(s1, "m")[-1] <= s1.applied["m"]
    assert check_acks(s2, "m")[-1] == 25 and s2.first["m"] == s1.applied["m"] + 1
    check_durable(s1, "m", directory, tmp_path)
    check_durable(s2, "m", directory, tmp_path)
    with DurableStore(directory) as store:
        assert stored_n(store, "m") == s2.n_after[("m", 25)] == 19


async def test_after_a_server_dies_the_rebuilt_session_is_acknowledged_on_its_new_server(tmp_path: Path) -> None:
    s1, s2 = await Recorder("s1").start(), await Recorder("s2").start()
    text = config(
        {"play": ([s1, s2], "send_acks: true\n    balance: round_robin")},
        store=durable_store(tmp_path / "state") + "always}",
    )
    try:
        async with running_proxy(text) as rt:
            c = await FramesClient.open(rt.listener_address("play"))
            assert (await c.call({"op": "hello", "sid": "r"}))["server"] == "s1"
            for _ in range(4):
                await c.call({"op": "add"})
            await s1.wait_acked("r", 5)
            await s1.stop()
            reply: dict[str, Any] = await c.call({"op": "add"})
            if reply.get("error") == "unknown_outcome":  # sent before the proxy saw s1 die
                reply = await c.call({"op": "add"})
            assert reply["server"] == "s2" and reply["n"] == 5
            last = reply["seq"]
            await s2.wait_acked("r", last)
            c.close()
    finally:
        await s1.stop()
        await s2.stop()
    assert s2.requires_ack["r"] is True
    assert check_acks(s2, "r")[-1] == last
    assert check_acks(s1, "r")[-1] == 5


async def test_acknowledged_state_survives_a_proxy_process_killed_mid_traffic(tmp_path: Path, frames_path: str) -> None:
    """The store's promise end to end: a proxy process SIGKILLed while requests flow, then started
    again on the same directory, has every state change a backend was acknowledged, and nothing a
    backend never made."""
    backend = await Recorder("s1").start()
    path = tmp_path / "ferryman.yaml"
    path.write_text(
        config({"play": ([backend], "send_acks: true")}, store=durable_store(tmp_path / "state") + "always}")
        + "admin: {bind: '127.0.0.1:0', token: secret}\n"
    )
    env = {**os.environ, "FERRYMAN_NO_SPEEDUPS": "0" if frames_path == "compiled" else "1"}
    proxy = await ProxyProcess.start(path, env=env)
    try:
        started = await proxy.event("proxy_started")
        host, port = started["listeners"]["play"].rsplit(":", 1)
        c = await FramesClient.open((host, int(port)))
        assert (await c.call({"op": "hello", "sid": "crash"}))["seq"] == 1
        for _ in range(40):
            await c.call({"op": "add"})
        await backend.wait_acked("crash", 30)
        for _ in range(40):  # more changes, the last of them not acknowledged yet when the proxy dies
            c.send({"op": "add"})
        while backend.applied["crash"] < 60:
            await c.recv()
        await proxy.kill()
        c.close()
        acked = backend.acked("crash")
        assert acked >= 30
        proxy = await ProxyProcess.start(path, env=env)
        started = await proxy.event("proxy_started")
        async with aiohttp.ClientSession(started["admin"]) as http, http.get("/sessions/crash/partitions/game") as r:
            assert r.status == 200
            stored = await r.json()
        # Every acknowledged change is back; what came back is a state the backend really had.
        assert stored["data"]["n"] >= backend.n_after[("crash", acked)]
        assert stored["data"]["n"] in set(backend.n_after.values())
        assert stored["version"] == stored["data"]["n"]  # one version per add
    finally:
        await proxy.kill()
        await backend.stop()
