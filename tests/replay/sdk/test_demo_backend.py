"""The demo game backend's client ops (a contract, DESIGN.md section 9) and its process life."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator

import msgpack
import pytest

from replay.canonical import digest
from replay.demo_backend import build_server, serve_backend
from replay.envelope import Attach, Attached, Delta, Missing, PartitionState, Req, Res, Restore, Restored
from tests.replay.sdk.scripted_proxy import DEADLINE_S, ScriptedProxy


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class Client:
    """Plays the proxy for one session: numbers requests, answers `missing` from its own store."""

    def __init__(self, proxy: ScriptedProxy, store: dict[str, PartitionState]) -> None:
        self.proxy = proxy
        self.store = store
        self.seq = 0
        self.restores: list[tuple[str, ...]] = []

    async def call(self, msg: object) -> dict:
        self.seq += 1
        body = pack(msg)
        while True:
            self.proxy.send(Req(self.seq, body))
            reply = await self.proxy.recv()
            if type(reply) is Missing:
                self.restores.append(reply.partitions)
                state = {p: self.store.get(p, PartitionState(0, {})) for p in reply.partitions}
                self.proxy.send(Restore(1, state))
                assert type(await self.proxy.recv()) is Restored
                continue
            assert type(reply) is Res and reply.seq == self.seq
            for name, delta in reply.deltas.items():
                old = self.store.get(name, PartitionState(0, {}))
                assert delta.version == old.version + 1
                data = {k: v for k, v in old.data.items() if k not in delta.delete}
                data.update(delta.set_)
                self.store[name] = PartitionState(delta.version, data)
            return msgpack.unpackb(reply.body, strict_map_key=False)


async def start(name: str = "b1", requires=("auth", "game"), state=None) -> tuple:
    server = build_server(name, requires)
    await server.start("127.0.0.1", 0)
    proxy = await ScriptedProxy.connect(server.address)
    state = dict(state or {})
    proxy.send(Attach("sess-1", 1, state, 1))
    reply = await proxy.recv()
    assert type(reply) is Attached
    return server, proxy, Client(proxy, state)


async def test_the_client_ops() -> None:
    server, proxy, client = await start()
    try:
        assert await client.call({"op": "hello", "sid": "sess-1"}) == {
            "ok": True,
            "sid": "sess-1",
            "server": "b1",
        }
        assert await client.call({"op": "login", "user": "ann"}) == {"ok": True, "server": "b1"}
        assert client.store["auth"] == PartitionState(1, {"user": "ann"})
        for n in (1, 2, 3):
            reply = await client.call({"op": "incr", "key": "hits", "seq": n})
            assert reply == {"key": "hits", "value": n, "seq": n, "server": "b1"}
        assert await client.call({"op": "incr", "key": 7, "seq": 4}) == {
            "key": 7,
            "value": 1,
            "seq": 4,
            "server": "b1",
        }
        assert await client.call({"op": "cart_add", "item": "apple"}) == {"cart": ["apple"], "server": "b1"}
        assert await client.call({"op": "cart_add", "item": {"sku": 2}}) == {
            "cart": ["apple", {"sku": 2}],
            "server": "b1",
        }
        state = (await client.call({"op": "get"}))["state"]
        assert state == {
            "auth": {"user": "ann"},
            "game": {"hits": 3, 7: 1},
            "cart": {"items": ["apple", {"sku": 2}]},
        }
        # Fresh session: auth and game came through one missing/restore round, cart through another.
        assert client.restores == [("auth", "game"), ("cart",)]
        assert client.store["game"].version == 4
        assert await client.call({"op": "dance"}) == {"ok": False, "error": "unknown_op", "server": "b1"}
        assert await client.call({}) == {"ok": False, "error": "unknown_op", "server": "b1"}
        assert await client.call([1, 2]) == {"ok": False, "error": "bad_request", "server": "b1"}
        assert await client.call({"op": "incr", "key": [1]}) == {
            "ok": False,
            "error": "bad_request",
            "server": "b1",
        }
    finally:
        await proxy.close()
        await server.close()


async def test_get_shows_exactly_the_attached_partitions() -> None:
    state = {"auth": PartitionState(3, {"user": "bob"}), "game": PartitionState(8, {"x": 5})}
    server, proxy, client = await start("b2", ("auth", "game"), state)
    try:
        assert await client.call({"op": "get"}) == {
            "state": {"auth": {"user": "bob"}, "game": {"x": 5}},
            "server": "b2",
        }
        reply = await client.call({"op": "incr", "key": "x", "seq": 1})
        assert reply["value"] == 6 and client.store["game"] == PartitionState(9, {"x": 6})
        assert client.restores == []
    finally:
        await proxy.close()
        await server.close()


async def test_raw_replies_carry_the_delta() -> None:
    server, proxy, _ = await start(state={"game": PartitionState(0, {})})
    try:
        proxy.send(Req(1, pack({"op": "incr", "key": "k", "seq": 1})))
        res = await proxy.recv()
        assert res.deltas == {"game": Delta(1, {"k": 1})}
    finally:
        await proxy.close()
        await server.close()


async def test_serve_backend_prints_where_it_listens(capsys: pytest.CaptureFixture[str]) -> None:
    ready = asyncio.Event()
    task = asyncio.create_task(serve_backend("127.0.0.1", 0, "b9", ("game",), ready))
    await ready.wait()
    line = capsys.readouterr().out.strip()
    assert line.startswith("listening 127.0.0.1:") and line.endswith(" name=b9")
    port = int(line.split()[1].rsplit(":", 1)[1])
    proxy = await ScriptedProxy.connect(("127.0.0.1", port))
    proxy.send(Attach("s", 1, {"game": PartitionState(2, {"a": 1})}, 1))
    assert await proxy.recv() == Attached(
        "s", 1, {"game": digest({"a": 1})}, {"game": 2}, ("game",), ("restore_deltas",)
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await proxy.closed() == []


@contextlib.asynccontextmanager
async def backend_process(*command: str) -> AsyncIterator[tuple[int, str]]:
    """A demo backend process; yields its port and the line it printed.  On exit it must stop cleanly
    on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(DEADLINE_S * 3):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("listening 127.0.0.1:"), line
        yield int(line.split()[1].rsplit(":", 1)[1]), line
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE_S * 3):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def hello(port: int, name: str, *, header: bytes = b"") -> ScriptedProxy:
    proxy = await ScriptedProxy.connect(("127.0.0.1", port))
    if header:
        proxy.send_raw(header)
    proxy.send(Attach("s", 1, {}, 1), Req(1, pack({"op": "hello", "sid": "s"})))
    assert type(await proxy.recv()) is Attached
    assert msgpack.unpackb((await proxy.recv()).body) == {"ok": True, "sid": "s", "server": name}
    return proxy


async def test_run_backend_process_stops_on_sigterm() -> None:
    command = ("replay.demo_backend", "--port", "0", "--name", "p1", "--requires", "auth,game")
    async with backend_process(*command) as (port, line):
        assert line.strip().endswith("name=p1")
        proxy = await hello(port, "p1")
    assert await proxy.closed() == []


def test_run_backend_reports_an_address_in_use() -> None:
    import subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "replay.demo_backend", "--port", str(port), "--name", "p2"],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S * 3,
            check=False,
        )
    assert done.returncode == 1
    assert f"demo-backend p2: cannot listen on 127.0.0.1:{port}" in done.stderr


def test_demo_backend_help_documents_accept_proxy() -> None:
    import subprocess

    for command in (("proxy", "demo-backend"), ("replay.demo_backend",)):
        help_text = subprocess.run(
            [sys.executable, "-m", *command, "--help"],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S * 3,
            check=True,
        ).stdout
        assert "--accept-proxy" in help_text and "PROXY protocol" in help_text, command
        assert all(flag in help_text for flag in ("--port", "--name", "--host", "--requires")), command


async def test_ferryman_demo_backend_accept_proxy_reads_the_header_first() -> None:
    async with backend_process("proxy", "demo-backend", "--port", "0", "--name", "p3", "--accept-proxy") as (port, _):
        proxy = await hello(port, "p3", header=b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n")
        plain = await ScriptedProxy.connect(("127.0.0.1", port))
        plain.send(Attach("t", 1, {}, 1))  # no header: refused
        (error,) = await plain.closed()
        assert error.code == "bad_envelope" and "PROXY" in error.message
    assert await proxy.closed() == []
