"""frames listeners with ``accept_proxy``: a PROXY protocol v1/v2 header, then the frames (real sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack
import orjson
import pytest

import replay.sdk.server as sdk_server
from proxy.core import proxy_protocol
from proxy.runtime import Runtime
from replay import tokens
from replay.demo_client import FramesClient
from replay.envelope import Attach, Attached, Restore, decode_from_proxy, encode_frame
from replay.frames import FrameDecoder
from tests.net.frames_support import GameServer, LoopbackServer, frames_config
from tests.support import running_proxy

V1 = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n"
V2 = proxy_protocol.build_v2(("2001:db8::7", 51000), ("2001:db8::1", 7000))


def frame(msg: Any) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def next_accept(rt: Runtime, listener: str = "play") -> asyncio.Future[Any]:
    """The proxy's side of the next connection ``listener`` accepts."""
    target = rt.listeners[listener]
    original = target.accepted
    accepted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def hook(client: Any, transport: Any) -> None:
        del target.accepted  # once
        original(client, transport)
        accepted.set_result(client)

    target.accepted = hook  # type: ignore[method-assign]
    return accepted


class ReadProbe:
    """Stands in for a client connection's decoder (the PROXY header stage, then the frame decoder)
    and reports each read the proxy hands it, so a test can make every chunk it writes a read of its
    own: it writes the next chunk only once the proxy has read the previous one."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.inner = client.decoder
        self.reads: asyncio.Queue[bytes] = asyncio.Queue()
        client.decoder = self

    def feed(self, data: bytes) -> list[bytes]:
        try:
            return self.inner.feed(data)
        finally:
            if self.client.decoder is not self:  # the header stage handed over to the frame decoder
                self.inner = self.client.decoder
                self.client.decoder = self
            self.reads.put_nowait(bytes(data))

    def eof(self) -> None:
        self.inner.eof()

    async def send_in_reads(self, writer: asyncio.StreamWriter, chunks: list[bytes]) -> None:
        for chunk in chunks:
            writer.write(chunk)
            got = b""
            async with asyncio.timeout(5):
                while len(got) < len(chunk):
                    got += await self.reads.get()
            assert got == chunk

    def remove(self) -> None:
        self.client.decoder = self.inner


async def open_raw(rt: Runtime) -> tuple[FramesClient, Any]:
    """A connection to the ``play`` listener and the proxy's side of it."""
    accepted = next_accept(rt)
    reader, writer = await asyncio.open_connection(*rt.listener_address("play"))
    async with asyncio.timeout(5):
        client = await accepted
    return FramesClient(reader, writer, timeout_s=10), client


async def eof(c: FramesClient) -> bytes:
    """Everything the proxy sends until it closes the connection."""
    async with asyncio.timeout(10):
        return await c.reader.read()


def access_lines(path: Any) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_v1_header_and_frames_in_one_write_give_the_client_address_everywhere(tmp_path) -> None:
    (s1,) = [await GameServer("s1").start()]
    log_path = tmp_path / "access.jsonl"
    config = frames_config([s1], listener="accept_proxy: true").replace(
        "global: {tick_s: 0.05}", f"global: {{tick_s: 0.05, access_log: '{log_path}'}}"
    )
    async with running_proxy(config) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        c, client = await open_raw(rt)
        # The header, two whole frames and the start of a third in one write; the rest in another.
        sent = frame({"op": "hello", "sid": "p1"}) + frame({"op": "incr", "key": "hp", "seq": 1})
        third = frame({"op": "incr", "key": "hp", "seq": 2})
        c.writer.write(V1 + sent + third[:3])
        assert await c.recv() == {"ok": True, "sid": "p1", "server": "s1"}
        assert await c.recv() == {"key": "hp", "value": 1, "seq": 1, "server": "s1"}
        assert client.header_timer is None  # the header came in time: its timer is gone
        c.writer.write(third[3:])
        assert await c.recv() == {"key": "hp", "value": 2, "seq": 2, "server": "s1"}
        (conn,) = rt.connections()
        assert conn["client"] == "203.0.113.7:40000" and conn["session"] == "p1" and conn["frames_in"] == 3
        async with http.get("/connections") as r:
            (listed,) = (await r.json())["connections"]
        assert listed["client"] == "203.0.113.7:40000"
        c.close()
        async with asyncio.timeout(5):
            await rt.wait_no_connections()
        rt.access_log.flush()
        (line,) = [x for x in access_lines(log_path) if x["kind"] == "frames"]
        assert (line["client_ip"], line["client_port"]) == ("203.0.113.7", 40000)
        assert line["session"] == "p1" and line["status"] == "client_closed"
        assert line["bytes_in"] == len(sent) + len(third)  # the header is not the client's payload
    await s1.stop()


async def test_v2_header_and_frames_split_byte_by_byte() -> None:
    (s1,) = [await GameServer("s1").start()]
    async with running_proxy(frames_config([s1], listener="accept_proxy: true")) as rt:
        c, client = await open_raw(rt)
        probe = ReadProbe(client)
        stream = V2 + frame({"op": "hello", "sid": "p2"}) + frame({"op": "incr", "key": "k", "seq": 1})
        await probe.send_in_reads(c.writer, [stream[i : i + 1] for i in range(len(stream))])
        assert await c.recv() == {"ok": True, "sid": "p2", "server": "s1"}
        assert await c.recv() == {"key": "k", "value": 1, "seq": 1, "server": "s1"}
        probe.remove()
        (conn,) = rt.connections()
        assert conn["client"] == "2001:db8::7:51000"
        assert (await c.call({"op": "incr", "key": "k", "seq": 2}))["value"] == 2
        c.close()
    await s1.stop()


async def test_the_end_of_the_header_and_part_of_a_frame_in_one_read() -> None:
    (s1,) = [await GameServer("s1").start()]
    async with running_proxy(frames_config([s1], listener="accept_proxy: true")) as rt:
        c, client = await open_raw(rt)
        probe = ReadProbe(client)
        hello = frame({"op": "hello", "sid": "p3"})
        await probe.send_in_reads(c.writer, [V1[:20], V1[20:] + hello[:2], hello[2:9], hello[9:]])
        assert await c.recv() == {"ok": True, "sid": "p3", "server": "s1"}
        probe.remove()
        assert rt.connections()[0]["client"] == "203.0.113.7:40000"
        c.close()
    await s1.stop()


async def test_v2_local_keeps_the_socket_address() -> None:
    (s1,) = [await GameServer("s1").start()]
    async with running_proxy(frames_config([s1], listener="accept_proxy: true")) as rt:
        c, _client = await open_raw(rt)
        local = proxy_protocol.V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])  # LOCAL, no addresses
        c.writer.write(local + frame({"op": "hello", "sid": "p4"}))
        assert (await c.recv())["sid"] == "p4"
        host, port = c.writer.get_extra_info("sockname")[:2]
        assert rt.connections()[0]["client"] == f"{host}:{port}"
        c.close()
    await s1.stop()


class ProxyHeaderFront(LoopbackServer):
    """What a server behind a PROXY-protocol-aware front sees: it takes the header the proxy sends
    (recorded in ``headers``) and relays the rest both ways to a game server."""

    def __init__(self, target: GameServer) -> None:
        super().__init__()
        self.target = target
        self.name = target.name
        self.requires = target.requires
        self.headers: list[proxy_protocol.ProxyHeader] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        buf = b""
        while (parsed := proxy_protocol.parse(buf)) is None:
            chunk = await reader.read(65536)
            if not chunk:
                writer.close()
                return
            buf += chunk
        header, used = parsed
        self.headers.append(header)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target.port)
        self.writers.append(up_writer)
        up_writer.write(buf[used:])

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_send_proxy_carries_the_address_from_the_client_header() -> None:
    game = await GameServer("s1").start()
    front = await ProxyHeaderFront(game).start()
    config = frames_config([front], listener="accept_proxy: true", pool="send_proxy: v2")
    async with running_proxy(config) as rt:
        c, _client = await open_raw(rt)
        c.writer.write(V1 + frame({"op": "hello", "sid": "p5"}))
        assert await c.recv() == {"ok": True, "sid": "p5", "server": "s1"}
        assert (await c.call({"op": "incr", "key": "k", "seq": 1}))["value"] == 1
        (header,) = front.headers
        assert (header.version, header.source_ip, header.source_port) == (2, "203.0.113.7", 40000)
        assert (header.dest_ip, header.dest_port) == ("198.51.100.1", 443)
        c.close()
    await front.stop()
    await game.stop()


async def test_send_proxy_header_goes_to_every_server_the_session_moves_to() -> None:
    games = [await GameServer("s1").start(), await GameServer("s2").start()]
    fronts = [await ProxyHeaderFront(g).start() for g in games]
    config = frames_config(fronts, listener="accept_proxy: true", pool="send_proxy: v1")
    async with running_proxy(config) as rt:
        c, _client = await open_raw(rt)
        c.writer.write(V1 + frame({"op": "hello", "sid": "p6"}))
        first = (await c.recv())["server"]
        other = "s2" if first == "s1" else "s1"
        (conn_id,) = rt.listeners["play"].connections
        report = await rt.migrate_connection(conn_id, other)
        assert report["outcome"] == "committed", report
        assert (await c.call({"op": "incr", "key": "k", "seq": 1}))["server"] == other
        for f in fronts:
            (header,) = f.headers
            assert (header.version, header.source_ip, header.source_port) == (1, "203.0.113.7", 40000)
        c.close()
    for x in (*fronts, *games):
        await x.stop()


async def test_malformed_header_closes_without_a_frame(tmp_path) -> None:
    (s1,) = [await GameServer("s1").start()]
    log_path = tmp_path / "access.jsonl"
    config = frames_config([s1], listener="accept_proxy: true").replace(
        "global: {tick_s: 0.05}", f"global: {{tick_s: 0.05, access_log: '{log_path}'}}"
    )
    async with running_proxy(config) as rt:
        c, _client = await open_raw(rt)
        bad = b"PROXY TCP4 203.0.113.7 not-an-address 40000 443\r\n"
        c.writer.write(bad + frame({"op": "hello", "sid": "x"}))
        assert await eof(c) == b""
        assert rt.stats()["listeners"]["play"]["closed_total"] == {"proxy_protocol_error": 1}
        assert "x" not in rt.sessions
        c.close()
        rt.access_log.flush()
        (line,) = access_lines(log_path)
        assert line["status"] == "proxy_protocol_error" and line["session"] is None and line["server"] is None
    await s1.stop()


async def test_frames_without_a_header_are_a_bad_header() -> None:
    (s1,) = [await GameServer("s1").start()]
    async with running_proxy(frames_config([s1], listener="accept_proxy: true")) as rt:
        c, _client = await open_raw(rt)
        c.send({"op": "hello", "sid": "y"})
        assert await eof(c) == b""
        assert rt.stats()["listeners"]["play"]["closed_total"] == {"proxy_protocol_error": 1}
        # A v2 signature cut off by a frame: refused as soon as the bytes differ, not waited for.
        c, _client = await open_raw(rt)
        c.writer.write(proxy_protocol.V2_SIGNATURE[:5] + frame({"op": "hello", "sid": "y"}))
        assert await eof(c) == b""
        assert rt.stats()["listeners"]["play"]["closed_total"] == {"proxy_protocol_error": 2}
        assert "y" not in rt.sessions
    await s1.stop()


async def test_a_header_not_complete_in_time_closes_the_connection() -> None:
    (s1,) = [await GameServer("s1").start()]
    config = frames_config([s1], listener="accept_proxy: true, proxy_header_timeout_s: 0.05")
    async with running_proxy(config) as rt:
        c, _client = await open_raw(rt)
        c.writer.write(V1[:10])  # then nothing: the timer ends it
        assert await eof(c) == b""
        assert rt.stats()["listeners"]["play"]["closed_total"] == {"proxy_header_timeout": 1}
        c.close()
    await s1.stop()


async def test_client_closing_inside_the_header_is_client_closed() -> None:
    (s1,) = [await GameServer("s1").start()]
    async with running_proxy(frames_config([s1], listener="accept_proxy: true")) as rt:
        c, client = await open_raw(rt)
        c.writer.write(V1[:10])
        c.writer.write_eof()
        assert await eof(c) == b""
        assert rt.stats()["listeners"]["play"]["closed_total"] == {"client_closed": 1}
        assert client.header_timer is None
        c.close()
    await s1.stop()


async def test_plain_dialect_takes_the_header_too() -> None:
    from tests.net.test_plain_mode import SECRET, UnmodifiedServer, plain_config

    s1 = await UnmodifiedServer("s1").start()
    listener = f"session_secret: {SECRET}"
    config = plain_config([s1]).replace(listener + "}", listener + ", accept_proxy: true}")
    assert "accept_proxy: true" in config
    async with running_proxy(config) as rt:
        c, _client = await open_raw(rt)
        login = {"op": "login", "sid": "pl", "token": tokens.sign(SECRET, "pl"), "user": "ann"}
        c.writer.write(V2 + frame(login))
        assert await c.recv() == {"ok": True, "server": "s1"}
        assert (await c.call({"op": "incr", "key": "k"}))["value"] == 1
        assert rt.connections()[0]["client"] == "2001:db8::7:51000"
        assert s1.frames_seen[0]["op"] == "login"  # the server never sees the header
        c.close()
    await s1.kill()


CLIENT = ("203.0.113.7", 40000)  # the source address of V1


def header_addresses(game: GameServer) -> list[tuple[str, int] | None]:
    """The source address of the PROXY header on each of an SDK server's live connections."""
    return [conn.proxy_client for conn in game.server._conns]


@pytest.mark.usefixtures("frames_path")
async def test_sdk_servers_take_the_send_proxy_header_on_every_server_the_session_moves_to() -> None:
    games = [await GameServer(name, accept_proxy=True).start() for name in ("s1", "s2")]
    config = frames_config(games, listener="accept_proxy: true", pool="send_proxy: v2")
    async with running_proxy(config) as rt:
        c, _client = await open_raw(rt)
        c.writer.write(V1 + frame({"op": "hello", "sid": "p7"}))
        first = (await c.recv())["server"]
        source, target = games if first == "s1" else games[::-1]
        assert (await c.call({"op": "incr", "key": "k", "seq": 1})) == {"key": "k", "value": 1, "seq": 1, "server": first}
        assert header_addresses(source) == [CLIENT]
        assert source.server.session("p7").client == CLIENT
        (conn_id,) = rt.listeners["play"].connections
        report = await rt.migrate_connection(conn_id, target.name)
        assert report["outcome"] == "committed", report
        reply = await c.call({"op": "incr", "key": "k", "seq": 2})
        assert reply == {"key": "k", "value": 2, "seq": 2, "server": target.name}
        assert header_addresses(target) == [CLIENT]
        assert target.server.session("p7").client == CLIENT
        for g in games:
            assert g.server.statistics().protocol_errors_total == 0
        c.close()
    for g in games:
        await g.stop()


async def test_sdk_servers_learn_the_client_address_from_attach_without_a_header() -> None:
    games = [await GameServer(name).start() for name in ("s1", "s2")]
    async with running_proxy(frames_config(games, listener="accept_proxy: true")) as rt:
        c, _client = await open_raw(rt)
        c.writer.write(V1 + frame({"op": "hello", "sid": "p8"}))
        first = (await c.recv())["server"]
        source, target = games if first == "s1" else games[::-1]
        assert source.server.session("p8").client == CLIENT
        assert header_addresses(source) == [None]  # no send_proxy: no header, the attach told it
        (conn_id,) = rt.listeners["play"].connections
        report = await rt.migrate_connection(conn_id, target.name)
        assert report["outcome"] == "committed", report
        assert (await c.call({"op": "incr", "key": "k", "seq": 1}))["server"] == target.name
        assert target.server.session("p8").client == CLIENT
        c.close()
    for g in games:
        await g.stop()


class RefusingTarget(LoopbackServer):
    """An envelope backend that takes an ``attach`` (recorded in ``attaches``) and drops the connection
    at the first ``restore``: a migration to it rolls back after the source was fenced."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.attaches: list[Attach] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for payload in decoder.feed(data):
                    env = decode_from_proxy(payload)
                    if type(env) is Restore:
                        return
                    if type(env) is Attach:
                        self.attaches.append(env)
                        digests = {n: ps.digest for n, ps in env.state.items()}
                        versions = {n: ps.version for n, ps in env.state.items()}
                        writer.write(encode_frame(Attached(env.sid, env.epoch, digests, versions)))
        finally:
            writer.transport.abort()


async def test_every_attach_of_a_rolled_back_migration_carries_the_client_address(monkeypatch) -> None:
    attaches: list[Attach] = []  # what the SDK server (the source) is sent
    decode = sdk_server.decode_from_proxy

    def recording(payload: bytes) -> Any:
        env = decode(payload)
        if type(env) is Attach:
            attaches.append(env)
        return env

    monkeypatch.setattr(sdk_server, "decode_from_proxy", recording)
    source = await GameServer("s1").start()
    target = await RefusingTarget("s2").start()
    config = frames_config([source, target], listener="accept_proxy: true", pool="balance: round_robin")
    async with running_proxy(config) as rt:
        c, _client = await open_raw(rt)
        c.writer.write(V1 + frame({"op": "hello", "sid": "p9"}))
        assert (await c.recv())["server"] == "s1"
        assert (await c.call({"op": "incr", "key": "k", "seq": 1}))["value"] == 1
        # A change outside any request: the fence reports it, so the handoff needs a restore.
        source.server.session("p9").state["game"]["tick"] = 1
        (conn_id,) = rt.listeners["play"].connections
        report = await rt.migrate_connection(conn_id, "s2")
        assert report["outcome"] == "rolled_back", report
        assert (await c.call({"op": "incr", "key": "k", "seq": 2})) == {"key": "k", "value": 2, "seq": 2, "server": "s1"}
        (precopy,) = target.attaches
        first, reattach = attaches
        assert reattach.epoch > precopy.epoch > first.epoch  # the fenced source bound again
        assert [a.client for a in (first, precopy, reattach)] == [CLIENT] * 3
        assert source.server.session("p9").client == CLIENT
        c.close()
    await source.stop()
    await target.stop()
