"""The TCP splice: two asyncio Protocols per proxied connection.

This is the thin I/O shell around :class:`proxy.core.connection.Connection`.  The machine decides;
this module performs its actions and otherwise copies bytes.

Hot path: ``data_received`` on either side is one attribute load, one integer add and one
``transport.write``.  No logging, no allocation beyond what the transport does, no per-message
timers (idle time is measured by the listener's tick from the byte counters).  ``bench/tcp.py``
measures it against HAProxy.

TCP_NODELAY: both uvloop and asyncio set it on every TCP transport they create, so we do not set it
again (a test checks both sides).  Bytes a client sends while its server is still being connected
are kept (up to the high-water mark, then reading pauses) rather than pausing reading up front:
most clients speak first, and pause/resume per connection is measurable on the connection rate.

Backpressure (both ways): each transport has write-buffer water marks; when the buffer towards one
peer passes the high mark, asyncio calls ``pause_writing`` on that side's protocol and we stop
reading from the *other* peer until ``resume_writing``.  A slow or dead reader therefore holds at most
``high_water_bytes`` plus one read in memory per direction.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from proxy.core import proxy_protocol
from proxy.core.connection import (
    CLIENT_EOF,
    SERVER_EOF,
    UPSTREAM_CONNECTED,
    ClientLost,
    Close,
    Connection,
    ConnectUpstream,
    ConnState,
    HeaderInvalid,
    HeaderParsed,
    ServerLost,
    ShutdownWrite,
    Side,
    StartRelay,
    UpstreamFailed,
)

if TYPE_CHECKING:
    from proxy.net.listener import Listener


def describe_error(exc: BaseException | None) -> str | None:
    """Translate a foreign exception into a short, stable reason string (once, at the boundary)."""
    if exc is None:
        return None
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


class ServerSide(asyncio.Protocol):
    """Upstream half: bytes from the server go straight to the client."""

    __slots__ = ("client", "nbytes", "nreads", "peer", "transport")

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.peer = client.transport
        self.nbytes = 0
        self.nreads = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client.upstream_made(self, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.nreads += 1
        self.peer.write(data)

    def eof_received(self) -> bool:
        self.client.apply(self.client.conn.handle(SERVER_EOF))
        return True  # keep the transport open: we may still write to the server (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.client.conn
        if conn.state is not ConnState.CLOSED:  # usually already closed by us: skip the event
            self.client.apply(conn.handle(ServerLost(describe_error(exc))))

    def pause_writing(self) -> None:
        # The server is not reading fast enough: stop reading from the client.
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()


class ClientSide(asyncio.Protocol):
    """Client half, and owner of the proxied connection."""

    __slots__ = (
        "closed",
        "conn",
        "connect_deadline_s",
        "connect_task",
        "connect_timed_out",
        "early",
        "early_paused",
        "header_timer",
        "idle_s",
        "last_activity",
        "listener",
        "nbytes",
        "nreads",
        "peer",
        "pending_header",
        "server",
        "transport",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.peer: asyncio.Transport | None = None  # the server transport once connected
        self.nbytes = 0
        self.nreads = 0
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: Connection = None  # type: ignore[assignment]
        self.server: ServerSide | None = None
        self.early = bytearray()  # bytes read before the server was connected (bounded, see below)
        self.early_paused = False
        self.pending_header: bytes | None = None
        self.connect_task: asyncio.Task[Any] | None = None
        self.connect_deadline_s = 0.0
        self.connect_timed_out = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.last_activity = 0
        self.idle_s = 0.0

    # -- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.listener.accepted(self, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None:
            self.nbytes += len(data)
            self.nreads += 1
            peer.write(data)
            return
        self._data_before_upstream(data)

    def eof_received(self) -> bool:
        self.apply(self.conn.handle(CLIENT_EOF))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        if conn is not None and conn.state is not ConnState.CLOSED:
            self.apply(conn.handle(ClientLost(describe_error(exc))))

    def pause_writing(self) -> None:
        # The client is not reading fast enough: stop reading from the server.
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()

    # -- before the relay starts -----------------------------------------------------------------

    def _data_before_upstream(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.early += data
        if self.conn.state is not ConnState.AWAITING_HEADER:
            if len(self.early) >= self.listener.water_marks[0] and not self.early_paused:
                self.early_paused = True
                self.transport.pause_reading()
            return
        try:
            parsed = proxy_protocol.parse(self.early)
        except proxy_protocol.ProxyProtocolError as exc:
            self.apply(self.conn.handle(HeaderInvalid(str(exc))))
            return
        if parsed is None:
            return
        header, consumed = parsed
        del self.early[:consumed]
        self.nbytes -= consumed  # the header is ours, not the client's payload
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.apply(self.conn.handle(HeaderParsed(header)))

    def upstream_made(self, server: ServerSide, transport: asyncio.Transport) -> None:
        if self.conn.state is ConnState.CLOSED:
            transport.close()
            return
        high, low = self.listener.water_marks
        transport.set_write_buffer_limits(high, low)
        self.server = server
        if self.pending_header is not None:
            transport.write(self.pending_header)
            self.pending_header = None
        if self.early:
            transport.write(bytes(self.early))
            self.early.clear()
        self.peer = transport
        self.apply(self.conn.handle(UPSTREAM_CONNECTED))

    def _connect(self, host: str, port: int, now_s: float) -> None:
        """Start connecting to the server.

        The task is the bare ``create_connection`` coroutine with a done-callback, not a wrapper
        coroutine under ``asyncio.timeout``: both cost a measurable share of the connection rate
        (bench/tcp.py, "connect+1rtt+close").  The connect deadline is enforced by the listener's
        tick sweep (``connect_deadline_s``), so it has tick granularity like the idle timeout.
        """
        loop = self.listener.loop
        task = loop.create_task(loop.create_connection(lambda: ServerSide(self), host, port))
        task.add_done_callback(self._connect_done)
        self.connect_task = task
        self.connect_deadline_s = now_s + self.conn.connect_timeout_s

    def _connect_done(self, task: asyncio.Task[Any]) -> None:
        if task is not self.connect_task:
            return  # an older attempt, already given up on
        self.connect_task = None
        if task.cancelled():
            if self.connect_timed_out and self.server is None:
                self.connect_timed_out = False
                self.apply(self.conn.handle(UpstreamFailed("timeout")))
            return
        exc = task.exception()
        if exc is None:
            return  # upstream_made already ran from the protocol's connection_made
        if self.server is None:
            self.apply(self.conn.handle(UpstreamFailed(describe_error(exc) or "error")))

    def connect_expired(self) -> None:
        """Called by the listener's sweep when the connect deadline passed."""
        task = self.connect_task
        if task is not None and not task.done():
            self.connect_timed_out = True
            task.cancel()

    # -- performing the machine's actions --------------------------------------------------------

    def apply(self, actions: list) -> None:
        for action in actions:
            kind = type(action)
            if kind is StartRelay:
                if self.early_paused:
                    self.early_paused = False
                    if not self.conn.client_eof:
                        self.transport.resume_reading()
            elif kind is ConnectUpstream:
                server = action.server
                self.pending_header = action.proxy_header
                self._connect(server.host, server.port, time.monotonic())
            elif kind is ShutdownWrite:
                transport = self.peer if action.side is Side.SERVER else self.transport
                if transport is not None and transport.can_write_eof():
                    try:
                        transport.write_eof()
                    except (OSError, RuntimeError):
                        pass
            elif kind is Close:
                self._close(action)

    def _close(self, action: Close) -> None:
        if self.closed:
            return
        self.closed = True
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        task = self.connect_task
        self.connect_task = None
        if task is not None:
            task.cancel()
        # close() flushes what is buffered first; abort() would drop it.
        self.transport.close()
        if self.peer is not None:
            self.peer.close()
        self.listener.connection_done(self, action)

    def abort(self) -> None:
        """Hard stop: drop both sides without flushing."""
        self.transport.abort()
        if self.peer is not None:
            self.peer.abort()

    @property
    def bytes_out(self) -> int:
        server = self.server
        return 0 if server is None else server.nbytes

    @property
    def reads_out(self) -> int:
        server = self.server
        return 0 if server is None else server.nreads
