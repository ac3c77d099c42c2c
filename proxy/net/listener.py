"""Listeners: accept client connections and hand each one to a :class:`ClientSide`.

A listener owns its connections (``connections``) and the connect tasks they start, so shutdown can
find and finish every one of them.  Settings that a reload may change (limits, timeouts, the pool)
are read at accept time, so a reload applies to new connections without touching open ones.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

from proxy.core.connection import Close, Connection, ConnState, TimedOut
from proxy.logs import iso_utc
from proxy.net.relay import ClientSide

if TYPE_CHECKING:
    from proxy.runtime import PoolRuntime, Runtime

_conn_ids = itertools.count(1)


class ListenerStats:
    __slots__ = (
        "accepted_total",
        "bytes_in_total",
        "bytes_out_total",
        "closed_total",
        "msgs_in_total",
        "rejected_total",
    )

    def __init__(self) -> None:
        self.msgs_in_total = 0
        self.accepted_total = 0
        self.rejected_total = 0
        self.bytes_in_total = 0
        self.bytes_out_total = 0
        self.closed_total: dict[str, int] = {}


class Listener:
    def __init__(self, runtime: Runtime, settings: Any) -> None:
        self.runtime = runtime
        self.settings = settings  # proxy.conf.Listener; replaced on reload
        self.name: str = settings.name
        self.connections: dict[int, ClientSide] = {}
        self.stats = ListenerStats()
        self.server: asyncio.AbstractServer | None = None
        self.loop = asyncio.get_running_loop()
        self.water_marks = runtime.water_marks
        self.bound: tuple[str, int] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        factory: Any
        if self.settings.mode == "frames":
            factory = self._frames_client
        else:
            factory = lambda: ClientSide(self)  # noqa: E731
        self.server = await loop.create_server(
            factory,
            host,
            port,
            backlog=self.settings.backlog,
            reuse_address=True,
        )
        sock = self.server.sockets[0]
        addr = sock.getsockname()
        self.bound = (addr[0], addr[1])

    def _frames_client(self) -> Any:
        """The client protocol of a frames connection, by its pool's dialect (read per connection:
        a reload may change it)."""
        from proxy.net.frames import FramesClient
        from proxy.net.plain import PlainClient

        if self.pool().settings.dialect == "plain":
            return PlainClient(self)
        return FramesClient(self)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def apply_settings(self, settings: Any) -> None:
        self.settings = settings
        self.water_marks = self.runtime.water_marks

    # -- accept path -----------------------------------------------------------------------------

    def pool(self) -> PoolRuntime:
        return self.runtime.pools[self.settings.pool]

    def accepted(self, client: ClientSide, transport: asyncio.Transport) -> None:
        settings = self.settings
        stats = self.stats
        stats.accepted_total += 1
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        pool = self.pool()
        # The local address matters only for PROXY headers; skip the lookup otherwise.
        if pool.settings.send_proxy != "none":
            local = transport.get_extra_info("sockname") or ("0.0.0.0", 0)
        else:
            local = ("0.0.0.0", 0)
        conn = Connection(
            next(_conn_ids),
            pool.state,
            client=(peer[0], peer[1]),
            local=(local[0], local[1]),
            now_s=time.time(),
            connect_retries=pool.settings.connect_retries,
            connect_timeout_s=pool.settings.connect_timeout_s,
            send_proxy=pool.settings.send_proxy,
        )
        client.conn = conn
        if len(self.connections) >= settings.max_connections or self.runtime.draining:
            # Like a full accept queue, but explicit: the client gets a FIN, the operator a counter.
            stats.rejected_total += 1
            conn.state = ConnState.CLOSED
            conn.status = "rejected"
            transport.close()
            return
        self.connections[conn.id] = client
        high, low = self.water_marks
        transport.set_write_buffer_limits(high, low)
        if settings.accept_proxy:
            client.header_timer = asyncio.get_running_loop().call_later(
                settings.proxy_header_timeout_s,
                lambda: client.apply(conn.handle(TimedOut("proxy_header_timeout"))),
            )
        if settings.mode == "frames":
            if settings.accept_proxy:
                client.expect_proxy_header()  # type: ignore[attr-defined]
            return  # the first frame names the session; placement waits for it
        client.apply(conn.start(expect_proxy_header=settings.accept_proxy))

    def connection_done(self, client: ClientSide, action: Close) -> None:
        conn = client.conn
        bytes_in = client.nbytes
        bytes_out = client.bytes_out
        conn.finish(bytes_in, bytes_out)
        self.connections.pop(conn.id, None)
        stats = self.stats
        stats.bytes_in_total += bytes_in
        stats.bytes_out_total += bytes_out
        stats.msgs_in_total += client.nreads
        stats.closed_total[action.status] = stats.closed_total.get(action.status, 0) + 1
        runtime = self.runtime
        now = time.time()
        runtime.connection_ended(self.name, conn, now, action.status, bytes_in, bytes_out)
        if runtime.access_log.enabled:
            server = conn.server
            sid = getattr(client, "sid", None)
            runtime.access_log.add(
                {
                    "ts": iso_utc(now),
                    "start": iso_utc(conn.started_s),
                    "kind": "conn" if sid is None else "frames",
                    "conn_id": conn.id,
                    "listener": self.name,
                    "pool": conn.pool.name,
                    "server": None if server is None else server.name,
                    "client_ip": conn.client_ip,
                    "client_port": conn.client_port,
                    "session": sid,
                    "client_id": None,
                    "resource": self.name,
                    "status": action.status,
                    "count": 1 if sid is None else client.frames_in,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "duration_s": round(now - conn.started_s, 6),
                }
            )
        if action.status in ("connect_failed", "no_server", "proxy_protocol_error", "error"):
            runtime.log.info(
                "conn_failed",
                conn_id=conn.id,
                listener=self.name,
                status=action.status,
                detail=action.detail,
            )
        if not self.connections and runtime.watching_connections:
            runtime.connections_changed()

    # -- periodic work ---------------------------------------------------------------------------

    def sweep(self, tick_s: float) -> None:
        """Per-tick timeouts: connects past their deadline, and connections that moved no byte
        either way for ``idle_timeout_s``.  Both therefore have tick granularity (``global.tick_s``)."""
        now = time.monotonic()
        limit = self.settings.idle_timeout_s
        expired: list[ClientSide] = []
        for client in self.connections.values():
            if client.connect_task is not None and now >= client.connect_deadline_s:
                client.connect_expired()
            if not limit:
                continue
            activity = client.nbytes + client.bytes_out
            if activity != client.last_activity:
                client.last_activity = activity
                client.idle_s = 0.0
                continue
            client.idle_s += tick_s
            if client.idle_s >= limit:
                expired.append(client)
        for client in expired:
            client.apply(client.conn.handle(TimedOut("idle_timeout")))

    def close_all(self, reason: str, hard: bool = False) -> None:
        for client in list(self.connections.values()):
            if hard:
                client.abort()
            client.apply(client.conn.handle(TimedOut(reason)))

    def cancel_connects(self) -> None:
        for client in self.connections.values():
            if client.connect_task is not None:
                client.connect_task.cancel()

    def snapshot(self, now_s: float, limit: int | None = None) -> list[dict[str, Any]]:
        out = []
        for client in itertools.islice(self.connections.values(), limit):
            out.append(describe_connection(self.name, client, now_s))
        return out


def describe_connection(listener: str, client: ClientSide, now_s: float) -> dict[str, Any]:
    conn = client.conn
    server = conn.server
    out = {
        "id": conn.id,
        "listener": listener,
        "pool": conn.pool.name,
        "server": None if server is None else server.name,
        "state": conn.state.value,
        "client": f"{conn.client_ip}:{conn.client_port}",
        "age_s": round(now_s - conn.started_s, 3),
        "idle_s": client.idle_s,
        "bytes_in": client.nbytes,
        "bytes_out": client.bytes_out,
        "client_eof": conn.client_eof,
        "server_eof": conn.server_eof,
    }
    describe = getattr(client, "describe", None)
    if describe is not None:
        out.update(describe())
    return out

