"""frames listeners end to end: sessions, partition state, live migration, rebuild, tokens, bad input."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from replay import tokens
from replay.demo_client import FramesClient
from tests.net.frames_support import GameServer, frames_config
from tests.support import running_proxy

AUTH = {"Authorization": "Bearer secret"}

pytestmark = pytest.mark.usefixtures("frames_path")  # compiled and Python steady-state paths


async def _servers(*specs: tuple[str, tuple[str, ...]]) -> list[GameServer]:
    return [await GameServer(name, requires).start() for name, requires in specs]


async def test_session_state_is_kept_by_the_proxy_as_the_backend_reports_it() -> None:
    servers = await _servers(("s1", ()))
    async with running_proxy(frames_config(servers)) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        c = await FramesClient.open(rt.listener_address("play"))
        hello = await c.call({"op": "hello", "sid": "player-1"})
        assert hello == {"ok": True, "sid": "player-1", "server": "s1"}
        assert (await c.call({"op": "login", "user": "ann"}))["ok"] is True
        for i in range(1, 6):
            assert await c.call({"op": "incr", "key": "hp", "seq": i}) == {"key": "hp", "value": i, "seq": i, "server": "s1"}
        async with http.get("/sessions/player-1/partitions/game") as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["data"] == {"hp": 5} and body["version"] == 5
        async with http.get("/sessions/player-1/partitions/auth") as r:
            assert (await r.json())["data"] == {"user": "ann"}
        async with http.put("/sessions/player-1/partitions/game", json={"data": {}}, headers=AUTH) as r:
            assert r.status == 409  # live: the backend owns its changes
        async with http.get("/connections") as r:
            (conn,) = (await r.json())["connections"]
        assert conn["session"] == "player-1" and conn["frames_in"] == 7 and conn["server"] == "s1"
        c.close()
    for s in servers:
        await s.stop()


async def test_migration_moves_the_session_and_replays_only_required_partitions() -> None:
    servers = await _servers(("s1", ("auth", "game", "cart")), ("s2", ("auth", "game")))
    config = frames_config(servers, pool="balance: round_robin")
    async with running_proxy(config) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        c = await FramesClient.open(rt.listener_address("play"))
        assert (await c.call({"op": "hello", "sid": "p"}))["server"] == "s1"
        await c.call({"op": "login", "user": "bob"})
        await c.call({"op": "cart_add", "item": "sword"})
        for i in range(1, 4):
            await c.call({"op": "incr", "key": "k", "seq": i})
        (conn_id,) = [x["id"] for x in rt.connections()]
        async with http.post(f"/connections/{conn_id}/migrate", json={"target": "s2"}, headers=AUTH) as r:
            report = await r.json()
            assert r.status == 200, report
        assert report["outcome"] == "committed" and report["source"] == "s1" and report["target"] == "s2"
        assert report["partitions_present"] == 3
        assert set(report["precopy_bytes"]) == {"auth", "game"}  # cart stays parked in the proxy
        assert report["pause_s"] is not None and report["pause_s"] >= 0
        reply = await c.call({"op": "incr", "key": "k", "seq": 4})
        assert reply == {"key": "k", "value": 4, "seq": 4, "server": "s2"}
        state = (await c.call({"op": "get"}))["state"]
        assert set(state) == {"auth", "game"} and state["game"]["k"] == 4
        # A partition the target lacks is fetched on demand (missing -> restore -> retry).
        assert (await c.call({"op": "cart_add", "item": "shield"}))["cart"] == ["sword", "shield"]
        async with http.get("/stats") as r:
            stats = (await r.json())["migrations"]
        assert stats["outcomes"]["committed"] == 1
        async with http.get("/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
        committed = [s for s in families["ferryman_migrations"].samples if s.labels.get("outcome") == "committed"]
        assert committed[0].value == 1
        assert families["ferryman_migration_pause_seconds_count"].samples[0].value == 1
        # Errors: unknown connection, unknown server, bad body, no token.
        async with http.post("/connections/999999/migrate", json={"target": "s2"}, headers=AUTH) as r:
            assert r.status == 404
        async with http.post(f"/connections/{conn_id}/migrate", json={"target": "nope"}, headers=AUTH) as r:
            assert r.status == 404
        async with http.post(f"/connections/{conn_id}/migrate", json={"to": "s1"}, headers=AUTH) as r:
            assert r.status == 400
        async with http.post(f"/connections/{conn_id}/migrate", json={"target": "s1"}) as r:
            assert r.status == 401
        async with http.post(f"/connections/{conn_id}/migrate", json={"target": "s2"}, headers=AUTH) as r:
            assert (await r.json())["cause"] == "already_there"
        c.close()
    for s in servers:
        await s.stop()


async def test_a_big_partition_changed_since_the_precopy_is_replayed_as_a_delta() -> None:
    servers = await _servers(("s1", ("auth", "game")), ("s2", ("auth", "game")))
    async with running_proxy(frames_config(servers, pool="balance: round_robin")) as rt:
        rt.store.set_partition_data("heavy", "game", {f"g{i:05d}": "x" * 56 for i in range(768)})  # 48 KiB
        c = await FramesClient.open(rt.listener_address("play"))
        assert (await c.call({"op": "hello", "sid": "heavy"}))["server"] == "s1"
        assert (await c.call({"op": "incr", "key": "hits", "seq": 1}))["value"] == 1
        # Changes made on s1 outside any request (a game tick): not in the store, so not in the
        # pre-copy; the fence reports them and the pause replays them.
        source = servers[0].server.session("heavy")
        assert source is not None
        source.state["game"]["g00007"] = "changed"
        del source.state["game"]["g00008"]
        (conn_id,) = [x["id"] for x in rt.connections()]
        report = await rt.migrate_connection(conn_id, "s2")
        assert report["outcome"] == "committed", report
        game = rt.store.get_partition_data("heavy", "game")
        assert game.version == 3 and game.data["g00007"] == "changed" and "g00008" not in game.data
        assert report["precopy_bytes"]["game"] > 48_000
        assert set(report["replay_bytes"]) == {"game"} and report["replay_bytes"]["game"] < 100
        reply = await c.call({"op": "get"})
        assert reply["server"] == "s2" and reply["state"] == {"auth": {}, "game": game.data}
        assert (await c.call({"op": "incr", "key": "hits", "seq": 2})) == {
            "key": "hits", "value": 2, "seq": 2, "server": "s2"
        }
        c.close()
    for s in servers:
        await s.stop()


async def test_a_dead_backend_is_replaced_from_the_store() -> None:
    servers = await _servers(("s1", ()), ("s2", ()))
    async with running_proxy(frames_config(servers)) as rt:
        c = await FramesClient.open(rt.listener_address("play"))
        first = (await c.call({"op": "hello", "sid": "z"}))["server"]
        for i in range(1, 4):
            await c.call({"op": "incr", "key": "x", "seq": i})
        dead = next(s for s in servers if s.name == first)
        await dead.stop()
        reply = await c.call({"op": "incr", "key": "x", "seq": 4})
        if reply.get("error") == "unknown_outcome":
            # The request reached the server before the proxy saw it die: the proxy does not replay
            # it blindly.  Whatever the dead server did, its change never reached the store.
            reply = await c.call({"op": "incr", "key": "x", "seq": 5})
        assert reply["value"] == 4 and reply["server"] != first
        assert rt.migrations.outcomes["committed"] == 1
        c.close()
    for s in servers:
        await s.stop()


async def test_session_tokens_refuse_forgeries_and_let_the_owner_back() -> None:
    servers = await _servers(("s1", ()))
    config = frames_config(servers, listener="session_secret: k3y")
    async with running_proxy(config) as rt:
        address = rt.listener_address("play")
        c = await FramesClient.open(address)
        hello = await c.call({"op": "hello"})  # no sid: the proxy makes one and signs it
        sid, token = hello["sid"], hello["token"]
        assert tokens.verify("k3y", sid, token)
        await c.call({"op": "incr", "key": "x", "seq": 1})
        forger = await FramesClient.open(address)
        refused = await forger.call({"op": "hello", "sid": sid, "token": "forged"})
        assert refused["error"] == "bad_session_token"
        assert await forger.closed()
        owner = await FramesClient.open(address)  # the owner reconnects; its old connection is replaced
        assert (await owner.call({"op": "hello", "sid": sid, "token": token}))["sid"] == sid
        assert (await c.recv())["error"] == "session_taken_over"
        assert (await owner.call({"op": "incr", "key": "x", "seq": 2}))["value"] == 2
        owner.close()
    for s in servers:
        await s.stop()


async def test_a_second_connection_cannot_take_a_live_session_without_tokens() -> None:
    servers = await _servers(("s1", ()))
    async with running_proxy(frames_config(servers)) as rt:
        a = await FramesClient.open(rt.listener_address("play"))
        await a.call({"op": "hello", "sid": "mine"})
        b = await FramesClient.open(rt.listener_address("play"))
        assert (await b.call({"op": "hello", "sid": "mine"}))["error"] == "session_in_use"
        assert (await a.call({"op": "incr", "key": "x", "seq": 1}))["value"] == 1
        a.close()
    for s in servers:
        await s.stop()


async def test_an_oversized_frame_closes_only_that_connection() -> None:
    servers = await _servers(("s1", ()))
    async with running_proxy(frames_config(servers, listener="max_frame_bytes: 1000")) as rt:
        good = await FramesClient.open(rt.listener_address("play"))
        await good.call({"op": "hello", "sid": "good"})
        bad = await FramesClient.open(rt.listener_address("play"))
        bad.writer.write((10_000_000).to_bytes(4, "big"))
        assert (await bad.recv())["error"] == "frame_too_large"
        assert await bad.closed()
        assert (await good.call({"op": "incr", "key": "x", "seq": 1}))["value"] == 1
        good.close()
    for s in servers:
        await s.stop()


async def test_state_changes_on_a_reply_without_a_body_reach_the_store() -> None:
    import msgpack

    from replay.sdk import Server

    server = Server("s1", requires=("game",))

    @server.handler
    async def on_frame(session, body: bytes) -> bytes | None:
        msg = msgpack.unpackb(body)
        if msg.get("op") == "silent":
            session.state["game"]["x"] = msg["value"]
            return None  # a res with deltas and no body: nothing for the client
        return msgpack.packb({"x": session.state["game"].get("x")})

    _, port = await server.start("127.0.0.1", 0)
    game = GameServer("s1")
    game.port = port
    async with running_proxy(frames_config([game])) as rt:
        c = await FramesClient.open(rt.listener_address("play"))
        c.send({"op": "silent", "sid": "quiet", "value": 7})
        assert await c.call({"op": "read"}) == {"x": 7}
        state = rt.store.get_partition_data("quiet", "game")
        assert state is not None and state.data == {"x": 7} and state.version == 1
        c.close()
    await server.close()


async def test_a_delta_the_store_refuses_during_a_migration_ends_only_that_connection() -> None:
    import asyncio

    import msgpack

    from replay.sdk import Server

    entered, gate = asyncio.Event(), asyncio.Event()
    servers = []
    for name in ("s1", "s2"):
        server = Server(name, requires=("game",))

        @server.handler
        async def on_frame(session, body: bytes, name: str = name) -> bytes | None:
            if msgpack.unpackb(body).get("op") == "slow":
                entered.set()
                await gate.wait()  # answered only once the migration has fenced this server
            session.state["game"]["n"] = session.state["game"].get("n", 0) + 1
            return msgpack.packb({"server": name})

        servers.append(server)
    games = []
    for name, server in zip(("s1", "s2"), servers, strict=True):
        _, port = await server.start("127.0.0.1", 0)
        g = GameServer(name)
        g.port = port
        games.append(g)
    async with running_proxy(frames_config(games, pool="balance: round_robin")) as rt:
        c = await FramesClient.open(rt.listener_address("play"), timeout_s=10)
        assert (await c.call({"op": "bump", "sid": "bad"}))["server"] == "s1"
        other = await FramesClient.open(rt.listener_address("play"), timeout_s=10)
        await other.call({"op": "bump", "sid": "good"})
        (conn_id,) = [x["id"] for x in rt.connections() if x["session"] == "bad"]
        c.send({"op": "slow"})
        await entered.wait()
        # The store moves on behind the server's back: the delta of its answer no longer follows.
        rt.store.set_partition_data("bad", "game", {"n": 100})
        migration = asyncio.create_task(rt.migrate_connection(conn_id, "s2"))
        gate.set()
        reply = await c.recv()
        assert reply["error"] == "server_error" and "refused by the store" in reply["message"]
        assert (await migration)["outcome"] == "aborted"
        assert (await other.call({"op": "bump"}))["server"] in ("s1", "s2")  # the other session is fine
        other.close()
    for server in servers:
        await server.close()
