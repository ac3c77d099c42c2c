"""The life of one proxied TCP connection (sans-IO).

Theory of operation
-------------------
The network shell (``proxy.net.relay``) owns the sockets and moves bytes; this machine owns every
*decision*: which server to try, whether to retry, when the connection is over and why.  The shell
feeds it events and performs the actions it returns.  Bytes never pass through here: the relay's
hot path is a direct splice between the two transports, so this machine sees only lifecycle events
(a handful per connection) and costs nothing per message.

States and transitions (``STATE x EVENT -> STATE + actions``)::

    AWAITING_HEADER  HeaderParsed        -> CONNECTING       ConnectUpstream
    AWAITING_HEADER  HeaderInvalid       -> CLOSED           Close(proxy_protocol_error)
    AWAITING_HEADER  TimedOut            -> CLOSED           Close(<reason>)
    CONNECTING       UpstreamConnected   -> ESTABLISHED      StartRelay
    CONNECTING       UpstreamFailed      -> CONNECTING       ConnectUpstream (next candidate)
                                         -> CLOSED           Close(connect_failed | no_server)
    ESTABLISHED      ClientEOF           -> ESTABLISHED      ShutdownWrite(SERVER)   (half-close)
    ESTABLISHED      ServerEOF           -> ESTABLISHED      ShutdownWrite(CLIENT)   (half-close)
    ESTABLISHED      both EOFs seen      -> CLOSED           Close(client_closed | server_closed)
    any but CLOSED   ClientLost          -> CLOSED           Close(client_closed | client_error)
    any but CLOSED   ServerLost          -> CLOSED           Close(server_closed | server_error)
    any but CLOSED   TimedOut            -> CLOSED           Close(<reason>)
    CLOSED           anything            -> CLOSED           (nothing)

Rules
-----
- A connection holds its server's slot (``PoolState.acquire``) from the moment the connect starts
  until it is closed, so bounded-load placement counts connections that are still connecting.
- A failed connect is a passive health observation and the next candidate is tried, excluding every
  server already tried, up to ``connect_retries`` further attempts (HAProxy ``retries`` +
  ``option redispatch``).
- ``Close`` is returned exactly once; its status is the access log's ``status``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from proxy.core import proxy_protocol
from proxy.core.hashing import key_hash
from proxy.core.pool import PoolState, ServerState


class ConnState(enum.Enum):
    AWAITING_HEADER = "awaiting_header"
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    CLOSED = "closed"


class Side(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderParsed:
    header: proxy_protocol.ProxyHeader


@dataclass(frozen=True, slots=True)
class HeaderInvalid:
    reason: str


@dataclass(frozen=True, slots=True)
class UpstreamConnected:
    pass


@dataclass(frozen=True, slots=True)
class UpstreamFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class ClientEOF:
    pass


@dataclass(frozen=True, slots=True)
class ServerEOF:
    pass


@dataclass(frozen=True, slots=True)
class ClientLost:
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ServerLost:
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TimedOut:
    reason: str  # idle_timeout | proxy_header_timeout | drain_timeout | shutdown


Event = (
    HeaderParsed | HeaderInvalid | UpstreamConnected | UpstreamFailed | ClientEOF | ServerEOF | ClientLost
    | ServerLost | TimedOut
)

# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectUpstream:
    server: ServerState
    proxy_header: bytes | None


@dataclass(frozen=True, slots=True)
class StartRelay:
    pass


@dataclass(frozen=True, slots=True)
class ShutdownWrite:
    side: Side


@dataclass(frozen=True, slots=True)
class Close:
    status: str
    detail: str | None = None


Action = ConnectUpstream | StartRelay | ShutdownWrite | Close

# Field-less events are immutable: share one instance instead of building one per use (the connection
# rate benchmark shows frozen-dataclass construction on this path).
UPSTREAM_CONNECTED = UpstreamConnected()
CLIENT_EOF = ClientEOF()
SERVER_EOF = ServerEOF()

_START_RELAY = StartRelay()
_SHUTDOWN_SERVER = ShutdownWrite(Side.SERVER)
_SHUTDOWN_CLIENT = ShutdownWrite(Side.CLIENT)


class Connection:
    """Decision state of one client connection.  See the module docstring for the table."""

    __slots__ = (
        "attempts_left",
        "client_eof",
        "client_ip",
        "client_port",
        "connect_timeout_s",
        "detail",
        "id",
        "key",
        "local_ip",
        "local_port",
        "pool",
        "send_proxy",
        "server",
        "server_eof",
        "started_s",
        "state",
        "status",
        "tried",
    )

    def __init__(
        self,
        conn_id: int,
        pool: PoolState,
        *,
        client: tuple[str, int],
        local: tuple[str, int],
        now_s: float,
        connect_retries: int = 2,
        connect_timeout_s: float = 5.0,
        send_proxy: str = "none",
    ) -> None:
        self.id = conn_id
        self.pool = pool
        self.client_ip, self.client_port = client
        self.local_ip, self.local_port = local
        self.started_s = now_s
        self.attempts_left = connect_retries + 1
        self.connect_timeout_s = connect_timeout_s
        self.send_proxy = send_proxy
        self.state = ConnState.AWAITING_HEADER
        self.server: ServerState | None = None
        self.tried: set[str] = set()
        self.key: int | None = None  # placement key when not the client's IP (frames: the session id's hash)
        self.client_eof = False
        self.server_eof = False
        self.status: str | None = None
        self.detail: str | None = None

    # -- entry points ----------------------------------------------------------------------------

    def start(self, *, expect_proxy_header: bool) -> list[Action]:
        """Called once the client is accepted."""
        if expect_proxy_header:
            return []
        self.state = ConnState.CONNECTING
        return self._connect_next()

    def handle(self, event: Event) -> list[Action]:
        state = self.state
        if state is ConnState.CLOSED:
            return []
        kind = type(event)
        if kind is TimedOut:
            return self._close(event.reason)  # type: ignore[union-attr]
        if kind is ClientLost:
            return self._close("client_error" if event.error else "client_closed", event.error)  # type: ignore[union-attr]
        if kind is ServerLost:
            if state is ConnState.CONNECTING:
                return []  # the connect attempt reports its own failure
            return self._close("server_error" if event.error else "server_closed", event.error)  # type: ignore[union-attr]
        if state is ConnState.AWAITING_HEADER:
            if kind is HeaderParsed:
                self.take_header(event.header)  # type: ignore[union-attr]
                self.state = ConnState.CONNECTING
                return self._connect_next()
            if kind is HeaderInvalid:
                return self._close("proxy_protocol_error", event.reason)  # type: ignore[union-attr]
            if kind is ClientEOF:
                return self._close("client_closed")
            return []
        if state is ConnState.CONNECTING:
            if kind is UpstreamConnected:
                self.state = ConnState.ESTABLISHED
                if self.client_eof:
                    # The client half-closed while we were connecting: pass its EOF on.
                    return [_START_RELAY, _SHUTDOWN_SERVER]
                return [_START_RELAY]
            if kind is UpstreamFailed:
                server = self.server
                assert server is not None
                self.pool.release(server, 0, 0)
                self.pool.observe_health(server.name, False, f"connect: {event.reason}")  # type: ignore[union-attr]
                self.detail = event.reason  # type: ignore[union-attr]
                self.server = None
                return self._connect_next()
            if kind is ClientEOF:
                self.client_eof = True
            return []
        # ESTABLISHED
        if kind is ClientEOF:
            self.client_eof = True
            if self.server_eof:
                return self._close("client_closed")
            return [_SHUTDOWN_SERVER]
        if kind is ServerEOF:
            self.server_eof = True
            if self.client_eof:
                return self._close("server_closed")
            return [_SHUTDOWN_CLIENT]
        return []

    def take_header(self, header: proxy_protocol.ProxyHeader) -> None:
        """Take the original addresses from a client's PROXY header.  ``UNKNOWN`` (v1) and ``LOCAL`` or
        ``UNSPEC`` (v2) headers carry none: the socket's addresses stay.  ``HeaderParsed`` does this
        and connects; frames mode calls it alone, as its placement waits for the first frame."""
        if header.source_ip is not None:
            self.client_ip, self.client_port = header.source_ip, header.source_port or 0
        if header.dest_ip is not None:
            self.local_ip, self.local_port = header.dest_ip, header.dest_port or 0

    def finish(self, bytes_in: int, bytes_out: int) -> None:
        """Release the server slot; called by the shell once, after it performed ``Close``."""
        server = self.server
        if server is not None:
            self.pool.release(server, bytes_in, bytes_out)

    # -- internals -------------------------------------------------------------------------------

    def placement_key(self) -> int:
        key = self.key
        return key_hash(self.client_ip) if key is None else key

    def _connect_next(self) -> list[Action]:
        if self.attempts_left <= 0:
            return self._close("connect_failed", self.detail)
        server = self.pool.pick(self.placement_key(), self.tried)
        if server is None:
            return self._close("connect_failed" if self.tried else "no_server", self.detail)
        self.attempts_left -= 1
        self.tried.add(server.name)
        self.server = server
        self.pool.acquire(server)
        header = None
        if self.send_proxy == "v1":
            header = proxy_protocol.build_v1((self.client_ip, self.client_port), (self.local_ip, self.local_port))
        elif self.send_proxy == "v2":
            header = proxy_protocol.build_v2((self.client_ip, self.client_port), (self.local_ip, self.local_port))
        return [ConnectUpstream(server, header)]

    def _close(self, status: str, detail: str | None = None) -> list[Action]:
        # A slot taken by a connect still in progress is released by finish(), like any other.
        self.state = ConnState.CLOSED
        self.status = status
        if detail is not None:
            self.detail = detail
        return [Close(status, self.detail if detail is None else detail)]
