"""The SDK server over real loopback sockets, driven by a scripted proxy (tests/replay/sdk/scripted_proxy.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgpack
import pytest

import replay.sdk.server as server_module
from proxy.core import proxy_protocol
from replay.canonical import digest
from replay.envelope import (
    Ack,
    Attach,
    Attached,
    Delta,
    Error,
    Fence,
    Fenced,
    Missing,
    PartitionState,
    Push,
    Release,
    Req,
    Res,
    Restore,
    Restored,
    RestoreDelta,
    encode_frame,
)
from replay.sdk import Server, Session, SessionFrozen, SessionStatus
from tests.replay.sdk.scripted_proxy import DEADLINE_S, ScriptedProxy


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


async def counter(session: Session, body: bytes) -> bytes | None:
    """incr game[key]; the key is the body; b"cart:<item>" also touches the cart partition."""
    game = session.state["game"]
    if body.startswith(b"cart:"):
        game["carts"] = game.get("carts", 0) + 1  # a change made before touching cart: must roll back
        session.state["cart"].setdefault("items", []).append(body[5:].decode())
        return b"ok"
    if body == b"read":
        return pack(session.state["game"].to_dict())
    key = body.decode()
    game[key] = game.get(key, 0) + 1
    return pack({"key": key, "value": game[key], "seq": session.seq})


@contextlib.asynccontextmanager
async def serving(handler=counter, requires=("auth", "game"), **kwargs) -> AsyncIterator[Server]:
    server = Server("s1", requires=requires, handler=handler, **kwargs)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


async def attached(
    server: Server, sid: str = "sess", epoch: int = 1, state=None, next_seq: int = 1
) -> ScriptedProxy:
    proxy = await ScriptedProxy.connect(server.address)
    proxy.send(Attach(sid, epoch, state if state is not None else {"game": PartitionState(0, {})}, next_seq))
    reply = await proxy.recv()
    assert type(reply) is Attached, reply
    return proxy


async def test_attach_loads_state_and_replies_digests() -> None:
    async with serving() as server:
        proxy = await ScriptedProxy.connect(server.address)
        state = {
            "auth": PartitionState(4, {"user": "ann"}),
            "game": PartitionState(9, {"score": 3, "items": [1, 2]}),
        }
        proxy.send(Attach("sess", 7, state, 10))
        reply = await proxy.recv()
        assert reply == Attached(
            "sess",
            7,
            {"auth": digest({"user": "ann"}), "game": digest({"score": 3, "items": [1, 2]})},
            {"auth": 4, "game": 9},
            ("auth", "game"),
            ("restore_deltas",),
        )
        session = server.session("sess")
        assert session is not None and session.epoch == 7 and session.live
        assert session.state["game"].to_dict() == {"score": 3, "items": [1, 2]}
        proxy.send(Req(10, b"score"))
        res = await proxy.recv()
        assert res == Res(
            10, pack({"key": "score", "value": 4, "seq": 10}), {"game": Delta(10, {"score": 4})}
        )
        await proxy.close()


async def test_requests_are_applied_in_order_one_at_a_time() -> None:
    running = 0
    most = 0

    async def handler(session: Session, body: bytes) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)  # give any concurrent request the chance to start (none may)
        game = session.state["game"]
        game["n"] = game.get("n", 0) + 1
        running -= 1
        return str(session.seq).encode()

    async with serving(handler) as server:
        proxy = await attached(server)
        proxy.send(*[Req(seq, b"") for seq in range(1, 31)])
        replies = await proxy.recv_n(30)
        assert [r.seq for r in replies] == list(range(1, 31))
        assert [r.body for r in replies] == [str(i).encode() for i in range(1, 31)]
        assert [r.deltas["game"] for r in replies] == [Delta(i, {"n": i}) for i in range(1, 31)]
        assert most == 1
        assert server.statistics().requests_total == 30
        await proxy.close()


async def test_read_only_and_no_reply_requests() -> None:
    async def handler(session: Session, body: bytes) -> bytes | None:
        session.state["game"].get("items")  # a mutable value read, not changed
        return None if body == b"quiet" else b"r"

    async with serving(handler) as server:
        proxy = await attached(server, state={"game": PartitionState(2, {"items": [1]})})
        proxy.send(Req(1, b"x"), Req(2, b"quiet"))
        assert await proxy.recv_n(2) == [Res(1, b"r"), Res(2, None)]
        await proxy.close()


async def test_missing_then_restore_then_retry() -> None:
    async with serving() as server:
        proxy = await attached(server)
        # Pipelined: 2 and 3 were sent before the proxy could see `missing` for 1.
        proxy.send(Req(1, b"cart:apple"), Req(2, b"a"), Req(3, b"a"))
        assert await proxy.recv() == Missing(1, ("auth", "cart"))
        restore = {"cart": PartitionState(0, {}), "auth": PartitionState(2, {"user": "ann"})}
        proxy.send(Restore(1, restore))
        restored = await proxy.recv()  # nothing for 2 and 3 came before this
        assert restored == Restored(
            1,
            {"cart": digest({}), "auth": digest({"user": "ann"}), "game": digest({})},
            {"game": 0, "cart": 0, "auth": 2},
        )
        proxy.send(Req(1, b"cart:apple"), Req(2, b"a"), Req(3, b"a"))
        r1, r2, r3 = await proxy.recv_n(3)
        # The first attempt's change to game was rolled back: one version, carts == 1.
        assert r1 == Res(1, b"ok", {"game": Delta(1, {"carts": 1}), "cart": Delta(1, {"items": ["apple"]})})
        assert (r2.seq, r2.deltas["game"]) == (2, Delta(2, {"a": 1}))
        assert (r3.seq, r3.deltas["game"]) == (3, Delta(3, {"a": 2}))
        assert server.statistics().missing_total == 1
        await proxy.close()


async def test_fence_with_requests_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    started = asyncio.Event()
    gate = asyncio.Event()
    fence_queued = asyncio.Event()
    applied: list[int] = []

    async def handler(session: Session, body: bytes) -> bytes:
        game = session.state["game"]
        game["n"] = game.get("n", 0) + 1
        applied.append(session.seq)
        if body == b"block":
            started.set()
            await gate.wait()
        return str(session.seq).encode()

    original = server_module._Connection.data_received

    def spy(self, data: bytes) -> None:
        original(self, data)
        if any(type(e) is Fence for e in self.queue):
            fence_queued.set()

    monkeypatch.setattr(server_module._Connection, "data_received", spy)

    async with serving(handler) as server:
        proxy = await attached(server)
        session = server.session("sess")
        proxy.send(Req(1, b"block"), Req(2, b""), Req(3, b""))
        await started.wait()
        proxy.send(Fence(2))
        await fence_queued.wait()  # the fence is in while request 1 still runs
        gate.set()
        assert await proxy.recv() == Res(1, b"1", {"game": Delta(1, {"n": 1})})
        assert await proxy.recv() == Fenced(2, 1, {})
        assert applied == [1]
        assert session.status is SessionStatus.FENCED and not session.live
        with pytest.raises(SessionFrozen):
            session.state["game"]["n"] = 5
        assert session.push(b"late") is False
        # After the fence nothing is applied; a second fence answers the same way.
        proxy.send(Req(4, b""), Fence(2))
        assert await proxy.recv() == Fenced(2, 1, {})
        assert applied == [1] and session.state["game"]["n"] == 1
        await proxy.close()


async def test_fence_reports_unreported_changes_and_next_seq_base() -> None:
    async with serving() as server:
        proxy = await attached(server, next_seq=41)
        session = server.session("sess")
        session.state["game"]["tick"] = 1  # a change made outside any request (a game tick)
        proxy.send(Fence(3))
        assert await proxy.recv() == Fenced(3, 40, {"game": Delta(1, {"tick": 1})})
        await proxy.close()


async def test_reattach_after_fence_resumes() -> None:
    async with serving() as server:
        proxy = await attached(server)
        proxy.send(Req(1, b"a"))
        assert type(await proxy.recv()) is Res
        proxy.send(Fence(2))
        assert await proxy.recv() == Fenced(2, 1, {})
        # Rolled-back migration: the source is attached again at a newer epoch, state kept.
        proxy.send(Attach("sess", 3, {}, 2), Req(2, b"a"))
        again = await proxy.recv()
        assert again == Attached(
            "sess", 3, {"game": digest({"a": 1})}, {"game": 1}, ("auth", "game"), ("restore_deltas",)
        )
        assert await proxy.recv() == Res(
            2, pack({"key": "a", "value": 2, "seq": 2}), {"game": Delta(2, {"a": 2})}
        )
        await proxy.close()


async def test_release_drops_the_session() -> None:
    detached: list[Session] = []
    async with serving(on_detach=detached.append) as server:
        proxy = await attached(server)
        session = server.session("sess")
        proxy.send(Req(1, b"a"))
        assert type(await proxy.recv()) is Res
        # Req 2 arrives with the release and is dropped unanswered; nothing answers the release;
        # req 3, after it, finds no session.
        proxy.send(Req(2, b"a"), Release(2), Req(3, b"a"))
        error = await proxy.recv()
        assert error == Error("unknown_session", "req on a connection without a session", 3)
        assert await proxy.closed() == []
        assert detached == [session] and session.status is SessionStatus.RELEASED
        assert server.session("sess") is None and server.sessions() == []
        with pytest.raises(SessionFrozen):
            session.state["game"]["a"] = 0


async def test_stale_epochs_are_refused() -> None:
    async with serving() as server:
        a = await attached(server, epoch=5)
        b = await ScriptedProxy.connect(server.address)
        b.send(Attach("sess", 4, {}, 1))
        error = await b.recv()
        assert type(error) is Error and error.code == "stale_epoch"
        assert await b.closed() == []
        a.send(Release(5))
        await a.close()
        # The server remembers the epoch after the session left.
        c = await ScriptedProxy.connect(server.address)
        c.send(Attach("sess", 3, {}, 1))
        assert (await c.recv()).code == "stale_epoch"
        d = await attached(server, epoch=5)
        d.send(Restore(4, {"game": PartitionState(1, {})}))
        assert (await d.recv()).code == "stale_epoch"
        assert await d.closed() == []
        e = await attached(server, epoch=6)
        e.send(Fence(5))
        assert (await e.recv()).code == "stale_epoch"


async def test_bad_input_closes_only_that_connection() -> None:
    async with serving(max_frame_bytes=4096) as server:
        good = await attached(server)
        garbage = await attached(server, sid="other")
        garbage.send_raw(b"\x00\x00\x00\x03\x93\x01\x02")  # an incomplete msgpack array
        error = await garbage.recv()
        assert type(error) is Error and error.code == "bad_envelope"
        assert await garbage.closed() == []
        big = await attached(server, sid="big")
        big.send_raw(b"\x00\x01\x00\x00")  # announces 64 KiB: refused from the header, no body sent
        error = await big.recv()
        assert error.code == "frame_too_large" and "65536" in error.message
        assert await big.closed() == []
        unknown = await ScriptedProxy.connect(server.address)
        unknown.send_raw(b"\x00\x00\x00\x07" + pack({"t": "res", "seq": 1})[:7])
        assert (await unknown.recv()).code == "bad_envelope"
        good.send(Req(1, b"a"))
        assert (await good.recv()).seq == 1
        assert server.statistics().protocol_errors_total == 3
        await good.close()


@pytest.mark.parametrize(
    "script,code",
    [
        ([Req(1, b"a")], "unknown_session"),
        ([Fence(1)], "unknown_session"),
        ([Attach("sess", 1, {}, 5), Req(4, b"a")], "bad_seq"),
        ([Attach("sess", 1, {}, 1), Req(2, b"a")], "bad_seq"),
        ([Attach("sess", 1, {}, 1), Attach("other", 2, {}, 1)], "bad_state"),
        ([Attach("sess", 1, {}, 1), Fence(2), Restore(2, {})], "bad_state"),
        # A restore delta applies to exactly the version it names, of a partition held.
        (
            [Attach("sess", 1, {"game": PartitionState(2, {"a": 1})}, 1), Restore(1, {}, {"game": RestoreDelta(1, 3)})],
            "bad_state",
        ),
        (
            [Attach("sess", 1, {"game": PartitionState(2, {"a": 1})}, 1), Restore(1, {}, {"game": RestoreDelta(3, 4)})],
            "bad_state",
        ),
        ([Attach("sess", 1, {}, 1), Restore(1, {}, {"cart": RestoreDelta(0, 1, {"a": 1})})], "bad_state"),
        ([Attach("sess", 1, {"game": PartitionState(1, {})}, 1), Fence(2), Restore(2, {}, {"game": RestoreDelta(1, 2)})], "bad_state"),
        ([Attach("sess", 1, {"g": PartitionState(1, {"t": msgpack.Timestamp(1)})}, 1)], "bad_envelope"),
    ],
)
async def test_protocol_violations(script, code) -> None:
    async with serving() as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send(*script)
        received = await proxy.closed()
        assert received and type(received[-1]) is Error and received[-1].code == code


async def test_restore_deltas_apply_to_the_held_version() -> None:
    async with serving() as server:
        held = {"a": 1, "b": 2, "items": [1]}
        proxy = await attached(server, state={"game": PartitionState(4, dict(held)), "auth": PartitionState(1, {})})
        session = server.session("sess")
        assert session is not None
        game = session.state["game"]
        assert game["items"] == [1]  # read outside a request (no change): does not block a delta
        proxy.send(
            Restore(2, {"auth": PartitionState(2, {"user": "bob"})}, {"game": RestoreDelta(4, 7, {"a": 10, "c": 3}, ("b",))})
        )
        now = {"a": 10, "items": [1], "c": 3}
        assert await proxy.recv() == Restored(
            2, {"auth": digest({"user": "bob"}), "game": digest(now)}, {"auth": 2, "game": 7}
        )
        assert session.state["game"] is game and game.to_dict() == now and game.version == 7
        # Versions continue from the delta's; nothing of the restore is reported back as a change.
        proxy.send(Req(1, b"a"))
        assert await proxy.recv() == Res(1, pack({"key": "a", "value": 11, "seq": 1}), {"game": Delta(8, {"a": 11})})
        await proxy.close()


async def test_a_restore_delta_over_unreported_changes_is_refused() -> None:
    async with serving() as server:
        proxy = await attached(server)  # game at version 0, empty
        session = server.session("sess")
        assert session is not None
        session.state["game"]["tick"] = 1  # a change outside any request, not reported yet
        proxy.send(Restore(1, {}, {"game": RestoreDelta(0, 2, {"a": 1})}))
        [error] = await proxy.closed()
        assert type(error) is Error and error.code == "bad_state" and "unreported" in error.message
    async with serving() as server:
        proxy = await attached(server, state={"game": PartitionState(3, {})})
        proxy.send(Restore(1, {}, {"game": RestoreDelta(2, 4, {"a": 1})}))
        [error] = await proxy.closed()
        assert error.code == "bad_state" and "from version 2, but version 3 is held" in error.message


async def test_handler_failure_rolls_back_and_still_answers() -> None:
    async def handler(session: Session, body: bytes) -> object:
        game = session.state["game"]
        game["n"] = game.get("n", 0) + 1
        if body == b"boom":
            raise RuntimeError("boom")
        if body == b"str":
            return "not bytes"
        if body == b"unencodable":
            game["bad"] = {1, 2}
        return pack(game["n"])

    errors: list[BaseException] = []

    def on_error(session: Session, body: bytes, exc: BaseException) -> bytes:
        errors.append(exc)
        return b"error:" + body

    async with serving(handler, on_error=on_error) as server:
        proxy = await attached(server)
        proxy.send(Req(1, b"boom"), Req(2, b"str"), Req(3, b"unencodable"), Req(4, b"ok"))
        replies = await proxy.recv_n(4)
        assert replies[:3] == [Res(1, b"error:boom"), Res(2, b"error:str"), Res(3, b"error:unencodable")]
        assert replies[3] == Res(4, pack(1), {"game": Delta(1, {"n": 1})})
        assert [type(e) for e in errors] == [RuntimeError, TypeError, server_module.EnvelopeError]
        assert server.statistics().handler_errors_total == 3
        await proxy.close()


async def test_push_inside_and_outside_requests() -> None:
    async def handler(session: Session, body: bytes) -> bytes:
        session.state["game"]["x"] = 1
        assert session.push(b"early")
        return b"late"

    async with serving(handler) as server:
        proxy = await attached(server)
        session = server.session("sess")
        session.state["game"]["tick"] = 1
        assert server.push("sess", b"tick")
        assert await proxy.recv() == Push(b"tick", {"game": Delta(1, {"tick": 1})})
        proxy.send(Req(1, b""))
        assert await proxy.recv() == Push(b"early")  # the request's changes stay with its res
        assert await proxy.recv() == Res(1, b"late", {"game": Delta(2, {"x": 1})})
        assert server.push("nobody", b"x") is False
        await proxy.close()


async def test_ack_is_recorded() -> None:
    async with serving() as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send(
            Attach("sess", 1, {"game": PartitionState(0, {})}, 1, requires_ack=True), Req(1, b"a"), Ack(1)
        )
        proxy.send(Req(2, b"a"))
        await proxy.recv_n(3)
        session = server.session("sess")
        assert session.requires_ack and session.acked_seq == 1
        await proxy.close()


async def test_on_ack_is_told_when_acked_seq_rises() -> None:
    seen: list[tuple[str, int, int]] = []

    def on_ack(session: Session, seq: int) -> None:
        seen.append((session.sid, seq, session.acked_seq))
        if seq == 3:
            raise RuntimeError("the application's bug")  # logged, the connection goes on

    async with serving(on_ack=on_ack) as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send(Attach("sess", 1, {"game": PartitionState(0, {})}, 1, requires_ack=True))
        proxy.send(Req(1, b"a"), Req(2, b"a"), Ack(2), Ack(1), Ack(2), Req(3, b"a"), Ack(3), Req(4, b"a"))
        await proxy.recv_n(5)  # attached, then every res: acks get no reply
        assert seen == [("sess", 2, 2), ("sess", 3, 3)]  # a lower or repeated ack changes nothing
        assert server.session("sess").acked_seq == 3
        assert server.statistics().protocol_errors_total == 0
        await proxy.close()


async def test_serve_until_cancelled_closes_connections() -> None:
    server = Server("s1", handler=counter)
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve("127.0.0.1", 0, ready))
    await ready.wait()
    proxy = await attached(server)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await proxy.closed() == []
    assert server.statistics().connections == 0


def test_server_needs_a_handler_and_valid_requires() -> None:
    with pytest.raises(ValueError):
        Server("s", requires=("bad name",))
    server = Server("s")
    with pytest.raises(ValueError, match="no handler"):
        asyncio.run(server.start())


# -- accept_proxy: a PROXY protocol header before the frames; the client's address ------------------

V1 = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n"
V2 = proxy_protocol.build_v2(("2001:db8::7", 51000), ("2001:db8::1", 7000))
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
V2_LOCAL = proxy_protocol.V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])  # LOCAL, no addresses


async def whoami(session: Session, body: bytes) -> bytes:
    return pack(session.client)


def record_reads(monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[bytes]:
    """Every read an SDK connection gets, reported once it has handled it."""
    reads: asyncio.Queue[bytes] = asyncio.Queue()
    original = server_module._Connection.data_received

    def data_received(self, data: bytes) -> None:
        original(self, data)
        reads.put_nowait(bytes(data))

    monkeypatch.setattr(server_module._Connection, "data_received", data_received)
    return reads


async def send_in_reads(proxy: ScriptedProxy, reads: asyncio.Queue[bytes], chunks: list[bytes]) -> None:
    """Write each chunk only once the server has read everything before it: each is a read of its own."""
    for chunk in chunks:
        proxy.send_raw(chunk)
        got = b""
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < len(chunk):
                got += await reads.get()
        assert got == chunk


ATTACH = encode_frame(Attach("sess", 1, {"game": PartitionState(0, {})}, 1))
REQ = encode_frame(Req(1, b"who"))


@pytest.mark.parametrize(
    "chunks",
    [
        [V1 + ATTACH + REQ],  # the header and every frame in one write
        [V1[:20], V1[20:] + ATTACH[:3], ATTACH[3:9], ATTACH[9:] + REQ],  # the header's end with a frame's start
        [V1[:-1], V1[-1:], ATTACH + REQ[:5], REQ[5:]],  # the header complete alone, on its last byte
    ],
    ids=["one-write", "header-end-and-frame-start", "header-alone"],
)
async def test_accept_proxy_v1_header_gives_the_client_address(monkeypatch, chunks) -> None:
    reads = record_reads(monkeypatch)
    async with serving(whoami, accept_proxy=True) as server:
        proxy = await ScriptedProxy.connect(server.address)
        await send_in_reads(proxy, reads, chunks)
        assert type(await proxy.recv()) is Attached
        res = await proxy.recv()
        assert res.seq == 1 and msgpack.unpackb(res.body) == ["203.0.113.7", 40000]
        assert server.session("sess").client == ("203.0.113.7", 40000)
        proxy.send(Req(2, b"again"))  # the frame decoder carries on after the header stage
        assert msgpack.unpackb((await proxy.recv()).body) == ["203.0.113.7", 40000]
        assert server.statistics().protocol_errors_total == 0
        await proxy.close()


async def test_accept_proxy_v2_header_and_frames_split_byte_by_byte(monkeypatch) -> None:
    reads = record_reads(monkeypatch)
    async with serving(whoami, accept_proxy=True) as server:
        proxy = await ScriptedProxy.connect(server.address)
        stream = V2 + ATTACH + REQ
        await send_in_reads(proxy, reads, [stream[i : i + 1] for i in range(len(stream))])
        assert type(await proxy.recv()) is Attached
        assert msgpack.unpackb((await proxy.recv()).body) == ["2001:db8::7", 51000]
        assert server.session("sess").client == ("2001:db8::7", 51000)
        await proxy.close()


@pytest.mark.parametrize("header", [V1_UNKNOWN, V2_LOCAL], ids=["v1-unknown", "v2-local"])
async def test_a_header_without_addresses_gives_no_client(header) -> None:
    async with serving(whoami, accept_proxy=True) as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send_raw(header + ATTACH + REQ)
        assert type(await proxy.recv()) is Attached
        assert msgpack.unpackb((await proxy.recv()).body) is None
        assert server.session("sess").client is None
        # The proxy's own view fills the gap (a mixed-family client gets an UNKNOWN header).
        other = await ScriptedProxy.connect(server.address)
        other.send_raw(header + encode_frame(Attach("two", 1, {}, 1, client=("203.0.113.8", 1))))
        assert type(await other.recv()) is Attached
        assert server.session("two").client == ("203.0.113.8", 1)
        await proxy.close()
        await other.close()


async def test_attach_client_wins_over_the_proxy_header() -> None:
    async with serving(whoami, accept_proxy=True) as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send_raw(V1 + encode_frame(Attach("sess", 1, {}, 1, client=("198.51.100.9", 1234))))
        assert type(await proxy.recv()) is Attached
        session = server.session("sess")
        assert session.client == ("198.51.100.9", 1234)
        # A re-attach without the field keeps it; one with the field replaces it.
        proxy.send(Fence(2), Attach("sess", 3, {}, 1))
        assert [type(e) for e in await proxy.recv_n(2)] == [Fenced, Attached]
        assert session.client == ("198.51.100.9", 1234)
        proxy.send(Fence(4), Attach("sess", 5, {}, 1, client=("198.51.100.10", 1)))
        assert [type(e) for e in await proxy.recv_n(2)] == [Fenced, Attached]
        assert session.client == ("198.51.100.10", 1)
        await proxy.close()


@pytest.mark.parametrize(
    "stream",
    [
        ATTACH,  # frames without a header
        b"PROXY TCP4 203.0.113.7 not-an-address 40000 443\r\n" + ATTACH,
        proxy_protocol.V2_SIGNATURE[:5] + ATTACH,  # a v2 signature cut off by a frame
        b"PROXY TCP4 " + b"1" * 120,  # no end of line within a v1 header's 107 bytes
        V2[:12] + b"\x11" + V2[13:] + ATTACH,  # the v2 signature, then version 1
    ],
    ids=["no-header", "bad-address", "cut-signature", "too-long", "bad-version"],
)
async def test_a_connection_without_a_valid_header_is_closed(stream, caplog) -> None:
    async with serving(whoami, accept_proxy=True) as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send_raw(stream)
        (error,) = await proxy.closed()
        assert type(error) is Error and error.code == "bad_envelope" and "PROXY" in error.message
        assert server.sessions() == [] and server.statistics().protocol_errors_total == 1
        (record,) = [r for r in caplog.records if r.msg == "sdk_proxy_header_refused"]
        assert record.name == "ferryman.sdk" and record.server == "s1"
        # Only that connection: the next one with a header is served.
        good = await ScriptedProxy.connect(server.address)
        good.send_raw(V1 + ATTACH)
        assert type(await good.recv()) is Attached
        await good.close()


async def test_a_connection_closed_inside_the_header_is_no_error() -> None:
    async with serving(whoami, accept_proxy=True) as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send_raw(V1[:10])
        proxy.writer.write_eof()
        assert await proxy.closed() == []
        assert server.statistics().protocol_errors_total == 0


async def test_without_accept_proxy_a_header_is_a_bad_frame_and_attach_gives_the_client() -> None:
    async with serving(whoami) as server:
        proxy = await ScriptedProxy.connect(server.address)
        proxy.send_raw(V1 + ATTACH)  # "PROXY..." read as a frame length, as always
        (error,) = await proxy.closed()
        assert error.code == "frame_too_large"
        plain = await attached(server)
        assert server.session("sess").client is None  # nothing said where the client is
        plain.send(Req(1, b"who"))
        assert msgpack.unpackb((await plain.recv()).body) is None
        told = await ScriptedProxy.connect(server.address)
        told.send(Attach("told", 1, {}, 1, client=("203.0.113.7", 40000)))
        assert type(await told.recv()) is Attached
        assert server.session("told").client == ("203.0.113.7", 40000)
        told.send(Req(1, b"who"))
        assert msgpack.unpackb((await told.recv()).body) == ["203.0.113.7", 40000]
        await plain.close()
        await told.close()
