"""Integration tests of the tcp data plane on real loopback sockets (both event loops)."""

from __future__ import annotations

import asyncio
import socket

import orjson

from proxy.core import proxy_protocol
from tests.support import Backend, config_text, connect, dead_port, roundtrip, running_proxy


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):
        return await reader.read()


async def test_relays_both_ways_and_writes_access_log(tmp_path) -> None:
    b1 = await Backend("b1").start()
    log_path = tmp_path / "access.jsonl"
    text = config_text([b1.address], global_=f"access_log: '{log_path}'")
    async with running_proxy(text) as rt:
        reader, writer = await connect(rt)
        assert await roundtrip(reader, writer, b"hello") == b"b1: hello"
        assert await roundtrip(reader, writer, b"again") == b"b1: again"
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            await rt.wait_no_connections()
        rt.access_log.flush()
        [line] = log_path.read_bytes().splitlines()
        record = orjson.loads(line)
        assert record["server"] == "s1" and record["listener"] == "front" and record["kind"] == "conn"
        assert record["bytes_in"] == 10 and record["bytes_out"] == 18
        assert record["status"] in ("client_closed", "server_closed")
        assert record["client_ip"] == "127.0.0.1"
    await b1.stop()


async def test_half_close_reaches_backend_and_reply_still_arrives() -> None:
    backend = await Backend("b", mode="sink").start()
    async with running_proxy(config_text([backend.address])) as rt:
        reader, writer = await connect(rt)
        writer.write(b"request body")
        writer.write_eof()
        async with asyncio.timeout(5):
            await backend.connected.wait()
            conn = backend.conns[0]
            await conn.eof.wait()
        assert bytes(conn.received) == b"request body"
        conn.transport.write(b"response after client EOF")
        conn.transport.close()
        assert await read_until_eof(reader) == b"response after client EOF"
    await backend.stop()


async def test_connect_failure_retries_next_server_and_marks_it() -> None:
    alive = await Backend("alive").start()
    dead = f"127.0.0.1:{dead_port()}"
    text = config_text([dead, alive.address], pool="balance: round_robin")
    async with running_proxy(text) as rt:
        for i in range(4):
            reader, writer = await connect(rt)
            assert await roundtrip(reader, writer, b"x%d" % i) == b"alive: x%d" % i
            writer.close()
        servers = {s["name"]: s for s in rt.describe_pool("game")["servers"]}
        assert servers["s1"]["connect_failures_total"] >= 1
        assert servers["s1"]["last_error"].startswith("connect")
    await alive.stop()


async def test_no_reachable_server_closes_client_with_status(tmp_path) -> None:
    log_path = tmp_path / "access.jsonl"
    text = config_text([f"127.0.0.1:{dead_port()}"], global_=f"access_log: '{log_path}'")
    async with running_proxy(text) as rt:
        reader, writer = await connect(rt)
        assert await read_until_eof(reader) == b""
        writer.close()
        async with asyncio.timeout(5):
            await rt.wait_no_connections()
        rt.access_log.flush()
        statuses = [orjson.loads(line)["status"] for line in log_path.read_bytes().splitlines()]
        assert statuses == ["connect_failed"]
        assert rt.stats()["listeners"]["front"]["closed_total"] == {"connect_failed": 1}


async def test_max_connections_rejects_extra_clients() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address], listener="max_connections: 1")) as rt:
        r1, w1 = await connect(rt)
        assert await roundtrip(r1, w1, b"one") == b"b: one"
        r2, w2 = await connect(rt)
        assert await read_until_eof(r2) == b""
        assert rt.stats()["listeners"]["front"]["rejected_total"] == 1
        assert await roundtrip(r1, w1, b"still") == b"b: still"
        w1.close()
        w2.close()
    await b.stop()


async def test_idle_connection_is_closed() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address], listener="idle_timeout_s: 0.2")) as rt:
        reader, writer = await connect(rt)
        assert await roundtrip(reader, writer, b"hi") == b"b: hi"
        assert await read_until_eof(reader) == b""
        assert rt.stats()["listeners"]["front"]["closed_total"] == {"idle_timeout": 1}
        writer.close()
    await b.stop()


async def test_accept_proxy_v1_and_send_proxy_v2() -> None:
    backend = await Backend("b", mode="sink").start()
    text = config_text([backend.address], listener="accept_proxy: true", pool="send_proxy: v2")
    async with running_proxy(text) as rt:
        _reader, writer = await connect(rt)
        writer.write(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\npayload")
        async with asyncio.timeout(5):
            await backend.connected.wait()
            conn = backend.conns[0]
            while not bytes(conn.received).endswith(b"payload"):
                await conn.wait_data()
        header, used = proxy_protocol.parse(bytes(conn.received))
        assert (header.source_ip, header.source_port) == ("203.0.113.7", 40000)
        assert bytes(conn.received[used:]) == b"payload"
        [info] = rt.connections()
        assert info["client"] == "203.0.113.7:40000"
        writer.close()
    await backend.stop()


async def test_missing_proxy_header_is_refused_not_guessed() -> None:
    backend = await Backend("b").start()
    async with running_proxy(config_text([backend.address], listener="accept_proxy: true")) as rt:
        reader, writer = await connect(rt)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await read_until_eof(reader) == b""
        assert backend.conns == []
        assert rt.stats()["listeners"]["front"]["closed_total"] == {"proxy_protocol_error": 1}
    await backend.stop()


async def test_slow_client_bounds_proxy_memory_and_loses_nothing() -> None:
    """The backend streams far more than the water marks while the client does not read."""
    backend = await Backend("b", mode="sink").start()
    high = 65536
    text = config_text([backend.address], global_=f"high_water_bytes: {high}, low_water_bytes: 16384")
    async with running_proxy(text) as rt:
        sock = socket.create_connection(rt.listener_address("front"))
        sock.setblocking(False)
        async with asyncio.timeout(5):
            await backend.connected.wait()
        conn = backend.conns[0]
        chunk = b"z" * 65536
        sent = 0
        # Write until the backend's own transport reports that the proxy stopped reading.
        async with asyncio.timeout(10):
            while not conn.paused.is_set():
                conn.transport.write(chunk)
                sent += len(chunk)
                await asyncio.sleep(0)
        [client] = rt.listeners["front"].connections.values()
        # Proxy holds at most the high-water mark plus one read towards the slow client.
        assert client.transport.get_write_buffer_size() <= high + 256 * 1024
        conn.transport.close()
        loop = asyncio.get_running_loop()
        received = 0
        async with asyncio.timeout(20):
            while True:
                data = await loop.sock_recv(sock, 1 << 20)
                if not data:
                    break
                received += len(data)
        assert received == sent
        sock.close()
    await backend.stop()


async def test_backend_dying_mid_transfer_closes_only_that_client() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address])) as rt:
        r1, w1 = await connect(rt)
        r2, w2 = await connect(rt)
        assert await roundtrip(r1, w1, b"a") == b"b: a"
        assert await roundtrip(r2, w2, b"b") == b"b: b"
        b.conns[0].transport.abort()  # RST towards the proxy
        assert await read_until_eof(r1) == b""
        assert await roundtrip(r2, w2, b"c") == b"b: c"
        w1.close()
        w2.close()
    await b.stop()


async def test_both_sides_have_tcp_nodelay() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address])) as rt:
        reader, writer = await connect(rt)
        assert await roundtrip(reader, writer, b"x") == b"b: x"
        [client] = rt.listeners["front"].connections.values()
        for transport in (client.transport, client.peer):
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        writer.close()
    await b.stop()


async def test_client_bytes_sent_before_the_server_answers_are_kept() -> None:
    """The client speaks first, in several writes, while the proxy is still connecting."""
    backend = await Backend("b", mode="sink").start()
    async with running_proxy(config_text([backend.address])) as rt:
        _reader, writer = await connect(rt)
        for i in range(50):
            writer.write(b"%03d," % i)
        await writer.drain()
        expected = b"".join(b"%03d," % i for i in range(50))
        async with asyncio.timeout(5):
            await backend.connected.wait()
            conn = backend.conns[0]
            while bytes(conn.received) != expected:
                await conn.wait_data()
        writer.close()
    await backend.stop()


async def test_connect_timeout_gives_up_on_a_server_that_never_answers(tmp_path) -> None:
    # A listening socket whose accept queue is full: further SYNs are dropped, connects hang.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(blackhole.getsockname())
        fillers.append(s)
    address = f"127.0.0.1:{blackhole.getsockname()[1]}"
    text = config_text([address], pool="connect_timeout_s: 0.2\n    connect_retries: 0")
    try:
        async with running_proxy(text) as rt:
            reader, writer = await connect(rt)
            assert await read_until_eof(reader) == b""
            assert rt.stats()["listeners"]["front"]["closed_total"] == {"connect_failed": 1}
            [server] = rt.describe_pool("game")["servers"]
            assert server["last_error"] == "connect: timeout"
            writer.close()
    finally:
        for s in (*fillers, blackhole):
            s.close()


async def test_slow_server_bounds_proxy_memory_the_other_way() -> None:
    """The client uploads far more than the water marks while the backend does not read."""
    backend = await Backend("b", mode="sink").start()
    high = 65536
    text = config_text([backend.address], global_=f"high_water_bytes: {high}, low_water_bytes: 16384")
    async with running_proxy(text) as rt:
        _reader, writer = await connect(rt)
        writer.write(b"x")
        async with asyncio.timeout(5):
            await backend.connected.wait()
        conn = backend.conns[0]
        conn.transport.pause_reading()  # the server stops reading
        chunk = b"u" * 65536
        sent = 1
        # Write until the client's own transport reports that the proxy stopped reading from it.
        transport = writer.transport
        async with asyncio.timeout(10):
            while transport.get_write_buffer_size() < 1 << 20:
                writer.write(chunk)
                sent += len(chunk)
                await asyncio.sleep(0)
        [client] = rt.listeners["front"].connections.values()
        assert client.peer.get_write_buffer_size() <= high + 256 * 1024
        conn.transport.resume_reading()
        async with asyncio.timeout(20):
            while len(conn.received) < sent:
                await conn.wait_data()
        assert len(conn.received) == sent
        writer.close()
    await backend.stop()


async def test_active_checks_take_a_dead_server_out_and_bring_it_back() -> None:
    b1 = await Backend("b1").start()
    b2 = await Backend("b2").start()
    pool = "health_check: {enabled: true, interval_s: 0.05, timeout_s: 0.05, rise: 2, fall: 2}"
    text = config_text([b1.address, b2.address]).replace("health_check: {enabled: false}", pool)
    async with running_proxy(text) as rt:
        port = b1.port
        await b1.stop()

        def state(name: str) -> str:
            return next(s for s in rt.describe_pool("game")["servers"] if s["name"] == name)["health"]

        async with asyncio.timeout(10):
            while state("s1") != "down":
                await rt.wait_health_change()
        for _ in range(5):
            reader, writer = await connect(rt)
            assert (await roundtrip(reader, writer, b"q")).startswith(b"b2: ")
            writer.close()
        await b1.start(port)
        async with asyncio.timeout(10):
            while state("s1") != "up":
                await rt.wait_health_change()
    await b2.stop()
