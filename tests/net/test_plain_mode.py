"""frames listeners in front of unmodified servers (``dialect: plain``): relaying, recording, replay."""

from __future__ import annotations

import asyncio
import base64
import textwrap
from typing import Any

import aiohttp
import msgpack
import pytest

from proxy.conf import ConfigInvalid, load_config_text
from proxy.net.frames import UNKNOWN_OUTCOME_BODY
from proxy.runtime import Runtime
from replay import tokens
from replay.demo_client import FramesClient
from tests.net.frames_support import LoopbackServer
from tests.support import running_proxy

SECRET = "k"
UNKNOWN_OUTCOME = msgpack.unpackb(UNKNOWN_OUTCOME_BODY)

# Rules of one partition must agree on their compaction, so the counters (a log) have a partition of
# their own next to the room (the last join).
RULES = """\
    plain_rules:
      - {match: {op: login}, partition: auth, compaction: last}
      - {match: {op: join}, partition: game, compaction: last}
      - {match: {op: incr}, partition: counters, compaction: log}
"""


class UnmodifiedServer(LoopbackServer):
    """A game server that knows nothing of ferryman: 4-byte big-endian length-prefixed msgpack maps,
    per-connection state in memory, one reply per frame (``login`` stores the user, ``join`` a room,
    ``incr`` a counter by name, ``get`` returns the state), and optionally a greeting frame.

    ``hold()`` makes it read frames without answering them (``held`` counts them) until ``release()``.
    """

    def __init__(self, name: str, requires: tuple[str, ...] = (), greeting: bool = False) -> None:
        super().__init__()
        self.name = name
        self.requires = requires
        self.greeting = greeting
        self.states: list[dict[str, Any]] = []  # one per connection, kept after it closes
        self.holding = False
        self.held = 0
        self.held_changed = asyncio.Condition()
        self.frames_seen: list[dict[str, Any]] = []
        self.backlog: list[tuple[dict[str, Any], Any, dict[str, Any]]] = []

    def hold(self) -> None:
        self.holding = True

    async def wait_held(self, n: int) -> None:
        async with asyncio.timeout(5), self.held_changed:
            await self.held_changed.wait_for(lambda: self.held >= n)

    async def kill(self) -> None:
        """Stop listening and drop every connection at once (a crash, as the proxy sees it)."""
        await self.stop()

    def release(self) -> None:
        """Answer the held frames, in order, and the next ones at once."""
        self.holding = False
        backlog, self.backlog = self.backlog, []
        for state, send, msg in backlog:
            self._apply(state, send, msg)

    def _apply(self, state: dict[str, Any], send: Any, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "login":
            state["user"] = msg["user"]
            send({"ok": True, "server": self.name})
        elif op == "join":
            state["room"] = msg["room"]
            send({"ok": True, "server": self.name})
        elif op == "incr":
            counters = state["counters"]
            counters[msg["key"]] = counters.get(msg["key"], 0) + 1
            send({"key": msg["key"], "value": counters[msg["key"]], "server": self.name})
        elif op == "get":
            send({"state": state, "server": self.name})
        else:
            send({"error": "unknown_op"})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state: dict[str, Any] = {"user": None, "room": None, "counters": {}}
        self.states.append(state)
        self.writers.append(writer)

        def send(msg: Any) -> None:
            body = msgpack.packb(msg, use_bin_type=True)
            writer.write(len(body).to_bytes(4, "big") + body)

        if self.greeting:
            send({"motd": f"welcome to {self.name}"})
        try:
            while True:
                header = await reader.readexactly(4)
                msg = msgpack.unpackb(await reader.readexactly(int.from_bytes(header, "big")), raw=False)
                self.frames_seen.append(msg)
                if self.holding:
                    self.backlog.append((state, send, msg))
                    async with self.held_changed:
                        self.held += 1
                        self.held_changed.notify_all()
                    continue
                self._apply(state, send, msg)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def plain_config(servers: list[UnmodifiedServer], *, pool: str = "", greeting_frames: int = 0) -> str:
    lines = "\n".join(
        f"      - {{name: {s.name}, address: '{s.address}'"
        + (f", requires: [{', '.join(s.requires)}]" if s.requires else "")
        + "}"
        for s in servers
    )
    return (
        textwrap.dedent(
            f"""\
            global: {{tick_s: 0.05}}
            listeners:
              - {{name: play, bind: '127.0.0.1:0', mode: frames, pool: game, session_secret: {SECRET}}}
            pools:
              - name: game
                dialect: plain
                health_check: {{enabled: false}}
                balance: round_robin
                requires: [auth, game, counters]
                plain_greeting_frames: {greeting_frames}
            """
        )
        + RULES
        + (f"    {pool}\n" if pool else "")
        + "    servers:\n"
        + lines
        + "\nadmin: {bind: '127.0.0.1:0', token: secret}\n"
    )


async def _servers(*names: str, greeting: bool = False) -> list[UnmodifiedServer]:
    return [await UnmodifiedServer(name, greeting=greeting).start() for name in names]


async def _open(rt: Runtime, sid: str) -> FramesClient:
    c = await FramesClient.open(rt.listener_address("play"), timeout_s=10)
    c.send({"op": "login", "sid": sid, "token": tokens.sign(SECRET, sid), "user": "ann"})
    return c


def _signal_after(rt: Runtime, conn_id: int, method: str) -> asyncio.Event:
    """An event set each time the connection's ``method`` has run."""
    found = rt.find_client(conn_id)
    assert found is not None
    client = found[1]
    original = getattr(client, method)
    event = asyncio.Event()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        event.set()
        return result

    setattr(client, method, wrapper)
    return event


async def _wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


def _stored(rt: Runtime, sid: str, partition: str) -> list[dict[str, Any]]:
    ps = rt.store.get_partition_data(sid, partition)
    assert ps is not None
    return [msgpack.unpackb(ps.data[seq]) for seq in sorted(ps.data)]


async def test_frames_are_relayed_unchanged_and_recorded_in_the_store() -> None:
    (s1,) = await _servers("s1")
    async with running_proxy(plain_config([s1])) as rt:
        c = await _open(rt, "p1")
        assert await c.recv() == {"ok": True, "server": "s1"}
        assert await c.call({"op": "join", "room": "r1"}) == {"ok": True, "server": "s1"}
        for i in range(1, 4):
            assert await c.call({"op": "incr", "key": "hp"}) == {"key": "hp", "value": i, "server": "s1"}
        reply = await c.call({"op": "get"})
        assert reply["state"] == {"user": "ann", "room": "r1", "counters": {"hp": 3}}
        # The server saw the client's frames exactly as sent (the first one names the session too).
        assert [m["op"] for m in s1.frames_seen] == ["login", "join", "incr", "incr", "incr", "get"]
        assert s1.frames_seen[0]["sid"] == "p1"
        # Recorded: login (auth, last), join and the incrs (game); get matched no rule.
        assert [m["op"] for m in _stored(rt, "p1", "auth")] == ["login"]
        assert [m["op"] for m in _stored(rt, "p1", "game")] == ["join"]
        assert [m["op"] for m in _stored(rt, "p1", "counters")] == ["incr", "incr", "incr"]
        async with aiohttp.ClientSession(rt.admin.url) as http, http.get("/sessions/p1/partitions/game") as r:
            body = await r.json()
            assert r.status == 200, body
        (frame,) = body["data"].values()
        assert msgpack.unpackb(base64.b64decode(frame["$base64"])) == {"op": "join", "room": "r1"}
        # A second login (a token refresh) replaces the first in its slot, in the store too.
        assert (await c.call({"op": "login", "user": "ann", "refresh": 1}))["ok"] is True
        assert _stored(rt, "p1", "auth") == [{"op": "login", "user": "ann", "refresh": 1}]
        (conn,) = rt.connections()
        assert conn["dialect"] == "plain" and conn["session"] == "p1" and conn["server"] == "s1"
        assert conn["inflight"] == 0 and conn["recorded_frames"] == {"auth": 1, "game": 1, "counters": 3}
        # A client reconnecting to its session gets a fresh server connection with the recorded frames
        # replayed first (their replies swallowed), then its own frames.
        c2 = await FramesClient.open(rt.listener_address("play"), timeout_s=10)
        c2.send({"op": "get", "sid": "p1", "token": tokens.sign(SECRET, "p1")})
        reply = await c2.recv()
        assert reply["state"] == {"user": "ann", "room": "r1", "counters": {"hp": 3}}
        assert s1.states[-1] == s1.states[0]
        assert (await c.recv())["error"] == "session_taken_over"
        assert await c.closed()
        c2.close()
    await s1.kill()


async def test_migration_replays_required_partitions_and_the_client_carries_on() -> None:
    s1, s2 = await _servers("s1", "s2", greeting=True)
    async with running_proxy(plain_config([s1, s2], greeting_frames=1)) as rt:
        c = await _open(rt, "p2")
        assert await c.recv() == {"motd": "welcome to s1"}  # the client's own connection: its greeting
        assert (await c.recv())["ok"] is True
        await c.call({"op": "join", "room": "lobby"})
        for _ in range(3):
            await c.call({"op": "incr", "key": "gold"})
        (conn_id,) = [x["id"] for x in rt.connections()]
        # Pipelined frames racing the migration: each is answered once, in order, by one server.
        for _ in range(3):
            c.send({"op": "incr", "key": "gold"})
        report = await rt.migrate_connection(conn_id, "s2")
        assert report["outcome"] == "committed", report
        assert report["dialect"] == "plain" and report["source"] == "s1" and report["target"] == "s2"
        assert report["partitions_present"] == 3 and report["partitions_replayed"] == 3
        assert report["greeting_frames"] == 1 and report["pause_s"] is not None
        replayed = report["replay_frames"]
        assert replayed["auth"] == 1 and replayed["game"] == 1 and 3 <= replayed["counters"] <= 6
        assert report["swallowed_frames"] == 1 + sum(replayed.values())
        assert [await c.recv() for _ in range(3)] == [{"key": "gold", "value": v, "server": ANY_SERVER} for v in (4, 5, 6)]
        reply = await c.call({"op": "incr", "key": "gold"})
        assert reply == {"key": "gold", "value": 7, "server": "s2"}
        # The target's state equals the source's for the replayed partitions: the source applied the
        # replayed incrs and no other; the target then went on from there.
        source_state = s1.states[0]
        assert source_state == {"user": "ann", "room": "lobby", "counters": {"gold": replayed["counters"]}}
        assert s2.states[0] == {**source_state, "counters": {"gold": 7}}
        assert rt.migrations.outcomes["committed"] == 1
        assert rt.stats()["migrations"]["outcomes"]["committed"] == 1
        assert (await rt.migrate_connection(conn_id, "s2"))["cause"] == "already_there"
        # The owner reconnects: its new server greets it, then gets the session replayed from the store.
        c2 = await FramesClient.open(rt.listener_address("play"), timeout_s=10)
        c2.send({"op": "get", "sid": "p2", "token": tokens.sign(SECRET, "p2")})
        assert (await c2.recv())["motd"].startswith("welcome to s")
        assert (await c2.recv())["state"] == {"user": "ann", "room": "lobby", "counters": {"gold": 7}}
        c2.close()
        c.close()
    for s in (s1, s2):
        await s.kill()


class _AnyServer:
    def __eq__(self, other: object) -> bool:
        return other in ("s1", "s2")


ANY_SERVER = _AnyServer()


async def test_a_killed_server_is_replaced_and_lost_replies_are_unknown_outcomes() -> None:
    s1, s2 = await _servers("s1", "s2")
    async with running_proxy(plain_config([s1, s2])) as rt:
        c = await _open(rt, "p3")
        assert (await c.recv())["server"] == "s1"
        await c.call({"op": "join", "room": "arena"})
        for i in range(1, 4):
            assert (await c.call({"op": "incr", "key": "xp"}))["value"] == i
        s1.hold()
        c.send({"op": "get"})
        c.send({"op": "get"})
        await s1.wait_held(2)
        await s1.kill()
        assert [await c.recv(), await c.recv()] == [UNKNOWN_OUTCOME, UNKNOWN_OUTCOME]
        reply = await c.call({"op": "get"})
        assert reply == {"state": {"user": "ann", "room": "arena", "counters": {"xp": 3}}, "server": "s2"}
        assert (await c.call({"op": "incr", "key": "xp"}))["value"] == 4
        assert rt.migrations.outcomes["committed"] == 1
        c.close()
    await s2.kill()


async def test_migration_rolls_back_when_the_target_is_gone() -> None:
    s1, s2 = await _servers("s1", "s2")
    async with running_proxy(plain_config([s1, s2])) as rt:
        c = await _open(rt, "p4")
        assert (await c.recv())["server"] == "s1"
        (conn_id,) = [x["id"] for x in rt.connections()]
        await s2.kill()
        report = await rt.migrate_connection(conn_id, "s2")
        assert report["outcome"] == "rolled_back" and report["cause"].startswith("target_failed")
        assert (await c.call({"op": "incr", "key": "a"})) == {"key": "a", "value": 1, "server": "s1"}
        c.close()
    await s1.kill()


async def test_migration_waits_for_outstanding_replies_before_replaying() -> None:
    s1, s2 = await _servers("s1", "s2")
    async with running_proxy(plain_config([s1, s2])) as rt:
        c = await _open(rt, "p5")
        assert (await c.recv())["server"] == "s1"
        (conn_id,) = [x["id"] for x in rt.connections()]
        s1.hold()
        c.send({"op": "incr", "key": "n"})
        await s1.wait_held(1)
        started, held = _signal_after(rt, conn_id, "start_migration"), _signal_after(rt, conn_id, "_hold")
        migration = asyncio.ensure_future(rt.migrate_connection(conn_id, "s2"))
        await _wait(started)
        c.send({"op": "incr", "key": "n"})  # held by the proxy while the migration runs
        await _wait(held)
        # Quiescing: the source still owes a reply, so nothing is replayed yet.
        assert s2.frames_seen == []
        s1.release()
        report = await migration
        assert report["outcome"] == "committed", report
        assert report["outstanding_at_pause"] == 1 and report["quiesce_s"] is not None
        assert report["buffered_frames"] == 1 and report["replay_frames"] == {"auth": 1, "counters": 1}
        assert await c.recv() == {"key": "n", "value": 1, "server": "s1"}  # the source's own reply
        assert await c.recv() == {"key": "n", "value": 2, "server": "s2"}  # the held frame, on the target
        c.close()
    for s in (s1, s2):
        await s.kill()


async def test_a_quiesce_that_never_ends_rolls_back_at_the_deadline() -> None:
    s1, s2 = await _servers("s1", "s2")
    async with running_proxy(plain_config([s1, s2], pool="migration_timeout_s: 0.2")) as rt:
        c = await _open(rt, "p6")
        assert (await c.recv())["server"] == "s1"
        (conn_id,) = [x["id"] for x in rt.connections()]
        s1.hold()
        c.send({"op": "get"})
        await s1.wait_held(1)
        report = await rt.migrate_connection(conn_id, "s2")
        assert report["outcome"] == "rolled_back" and report["cause"].startswith("quiesce_timeout"), report
        s1.release()
        assert (await c.recv())["server"] == "s1"
        assert await c.call({"op": "incr", "key": "n"}) == {"key": "n", "value": 1, "server": "s1"}
        assert rt.migrations.outcomes["rolled_back"] == 1
        c.close()
    for s in (s1, s2):
        await s.kill()


def test_bad_plain_rules_are_reported_at_their_path() -> None:
    text = textwrap.dedent(
        """\
        listeners:
          - {name: play, bind: '127.0.0.1:0', mode: frames, pool: game}
        pools:
          - name: game
            dialect: plain
            plain_rules:
              - {match: {op: cart_add}, partition: cart, compaction: last-by-key}
              - {match: {op: say}, partition: chat, replies: -1, colour: red}
            servers:
              - {name: s1, address: '127.0.0.1:9001'}
        """
    )
    with pytest.raises(ConfigInvalid) as info:
        load_config_text(text, "t.yaml")
    good = text.replace("- {match: {op: say}, partition: chat, replies: -1, colour: red}", "- {match: {op: !!binary c2F5}, partition: chat}")
    good = good.replace("compaction: last-by-key}", "compaction: last-by-key, key: item}")
    (pool,) = load_config_text(good, "t.yaml").pools
    assert pool.plain_ruleset().classify(msgpack.packb({"op": b"say"})).rule.partition == "chat"
    assert [str(e) for e in info.value.errors] == [
        "t.yaml:7:9: pools[0].plain_rules[0].key: last-by-key needs the name of the key field",
        "t.yaml:8:54: pools[0].plain_rules[1].replies: must be an integer >= 0, not -1",
        "t.yaml:8:66: pools[0].plain_rules[1].colour: unknown key",
    ]
