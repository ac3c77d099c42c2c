"""Sans-IO tests of the connection machine: feed events, assert actions."""

from __future__ import annotations

from proxy.core import proxy_protocol
from proxy.core.connection import (
    ClientEOF,
    ClientLost,
    Close,
    Connection,
    ConnectUpstream,
    ConnState,
    HeaderInvalid,
    HeaderParsed,
    ServerEOF,
    ServerLost,
    ShutdownWrite,
    Side,
    StartRelay,
    TimedOut,
    UpstreamConnected,
    UpstreamFailed,
)
from proxy.core.pool import PoolState, ServerSpec


def make(n: int = 3, retries: int = 2, send_proxy: str = "none", fall: int = 3) -> Connection:
    pool = PoolState("p", [ServerSpec(f"s{i}", "127.0.0.1", 9000 + i) for i in range(1, n + 1)], fall=fall)
    return Connection(
        1, pool, client=("192.0.2.10", 5555), local=("127.0.0.1", 7000), now_s=0.0, connect_retries=retries,
        send_proxy=send_proxy,
    )


def test_happy_path_and_half_close_both_ways() -> None:
    c = make()
    [connect] = c.start(expect_proxy_header=False)
    assert isinstance(connect, ConnectUpstream) and connect.proxy_header is None
    assert c.pool.active(connect.server) == 1
    assert c.handle(UpstreamConnected()) == [StartRelay()]
    assert c.handle(ClientEOF()) == [ShutdownWrite(Side.SERVER)]
    assert c.state is ConnState.ESTABLISHED
    assert c.handle(ServerEOF()) == [Close("server_closed", None)]
    assert c.handle(ServerLost()) == []  # nothing after close
    c.finish(10, 20)
    assert c.pool.active(connect.server) == 0 and connect.server.bytes_out_total == 20


def test_server_half_close_first() -> None:
    c = make()
    c.start(expect_proxy_header=False)
    c.handle(UpstreamConnected())
    assert c.handle(ServerEOF()) == [ShutdownWrite(Side.CLIENT)]
    assert c.handle(ClientEOF()) == [Close("client_closed", None)]


def test_connect_failure_retries_other_servers_then_gives_up() -> None:
    c = make(n=3, retries=1)
    [first] = c.start(expect_proxy_header=False)
    [second] = c.handle(UpstreamFailed("connection refused"))
    assert isinstance(second, ConnectUpstream) and second.server.name != first.server.name
    assert c.pool.active(first.server) == 0 and first.server.connect_failures_total == 1
    [close] = c.handle(UpstreamFailed("connection refused"))
    assert close == Close("connect_failed", "connection refused")
    c.finish(0, 0)
    assert sum(c.pool.load.values()) == 0


def test_passive_failures_take_a_server_down() -> None:
    c = make(n=2, retries=5, fall=1)
    [first] = c.start(expect_proxy_header=False)
    c.handle(UpstreamFailed("timeout"))
    assert not first.server.health.up and not first.server.eligible


def test_no_server_at_all() -> None:
    c = make(n=1, fall=1)
    c.pool.observe_health("s1", False, "check: refused")
    assert c.start(expect_proxy_header=False) == [Close("no_server", None)]


def test_proxy_header_sets_client_address_and_is_forwarded() -> None:
    c = make(send_proxy="v1")
    assert c.start(expect_proxy_header=True) == []
    header = proxy_protocol.ProxyHeader(1, "203.0.113.9", 4444, "198.51.100.1", 443)
    [connect] = c.handle(HeaderParsed(header))
    assert (c.client_ip, c.client_port) == ("203.0.113.9", 4444)
    assert connect.proxy_header == b"PROXY TCP4 203.0.113.9 198.51.100.1 4444 443\r\n"


def test_bad_proxy_header_closes_with_reason() -> None:
    c = make()
    c.start(expect_proxy_header=True)
    assert c.handle(HeaderInvalid("missing PROXY protocol header")) == [
        Close("proxy_protocol_error", "missing PROXY protocol header")
    ]


def test_client_eof_while_connecting_is_passed_on_after_connect() -> None:
    c = make()
    c.start(expect_proxy_header=False)
    assert c.handle(ClientEOF()) == []
    assert c.handle(UpstreamConnected()) == [StartRelay(), ShutdownWrite(Side.SERVER)]


def test_client_lost_while_connecting_releases_slot_once() -> None:
    c = make()
    [connect] = c.start(expect_proxy_header=False)
    assert c.handle(ClientLost("connection reset")) == [Close("client_error", "connection reset")]
    assert c.handle(UpstreamFailed("cancelled")) == []
    c.finish(0, 0)
    assert c.pool.active(connect.server) == 0


def test_timeouts_and_server_errors() -> None:
    c = make()
    c.start(expect_proxy_header=False)
    c.handle(UpstreamConnected())
    assert c.handle(TimedOut("idle_timeout")) == [Close("idle_timeout", None)]
    c2 = make()
    c2.start(expect_proxy_header=False)
    assert c2.handle(ServerLost("connection reset")) == []  # still connecting: the connect reports
    c2.handle(UpstreamConnected())
    assert c2.handle(ServerLost("connection reset")) == [Close("server_error", "connection reset")]
