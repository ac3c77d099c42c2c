"""The backend SDK's server: the envelope dialect (docs/protocol.md) behind plain handlers.

Theory of operation
-------------------
The proxy opens one TCP connection per client connection and binds it to one session with
``attach``.  Each connection is an asyncio ``Protocol`` (:class:`_Connection`) plus one worker task
that it owns.  ``data_received`` decodes frames and envelopes and sorts them:

- every envelope goes into the connection's FIFO queue, which the worker applies strictly one at a
  time and in arrival order (docs/protocol.md, "Ordering");
- on receipt, ``fence`` and ``release`` also drop every queued ``req`` (they are "dropped
  unanswered"), so they wait only for the request whose handler is already running.

Per request the worker opens the state's undo log, awaits the handler, then either

- answers ``missing`` (the handler touched a partition not held): the request is rolled back and
  every ``req`` after it is discarded until the proxy sends the same seq again after its ``restore``;
- or collects the deltas of the request, encodes ``res`` and only then commits the versions, so a
  reply that cannot be encoded rolls the request back instead of reporting half of it.

Connection states, as the worker sees them (``SessionStatus`` of the bound session)::

    (unbound)  attach                      -> ATTACHED   attached
    ATTACHED   req seq=expected            -> ATTACHED   res | missing
    ATTACHED   restore                     -> ATTACHED   restored (states loaded, deltas applied)
    ATTACHED   fence                       -> FENCED     fenced (after the running handler)
    FENCED     req                         -> FENCED     (dropped)
    FENCED     fence                       -> FENCED     fenced (again, no deltas)
    FENCED     attach same sid             -> ATTACHED   attached (re-attach after a rollback)
    any        release                     -> (unbound)  (nothing)
    any        protocol violation          -> closed     error

Epochs: the server remembers, per session id, the highest epoch any envelope carried (across its
connections, and for a bounded number of sessions after they left); ``attach``, ``restore`` and
``fence`` below it are refused with ``stale_epoch``.  ``release`` is honoured at any epoch: it only
drops this connection's own copy of the state.

Hot path (``req`` -> ``res``): one ``msgpack.unpackb`` and one ``packb``, one future to wake the worker
per burst, no logging, no per-request timers.

PROXY protocol (``accept_proxy``): until a connection's PROXY v1/v2 header is complete its decoder is a
:class:`proxy.core.proxy_protocol.HeaderStage`, which parses the header and then puts the
frame decoder back with the bytes that followed it, so the per-read path has no check for it.  A
connection that does not start with a valid header is a protocol error (``bad_envelope``, closed).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from proxy.core import proxy_protocol
from replay.canonical import digest
from replay.envelope import (
    BAD_ENVELOPE,
    BAD_SEQ,
    BAD_STATE,
    EMPTY,
    FRAME_TOO_LARGE,
    RESTORE_DELTAS,
    STALE_EPOCH,
    UNKNOWN_SESSION,
    Ack,
    Attach,
    Attached,
    Delta,
    EnvelopeError,
    Error,
    Fence,
    Fenced,
    Missing,
    Push,
    Release,
    Req,
    Res,
    Restore,
    Restored,
    decode_from_proxy,
    encode_frame,
    validate_partition_name,
)
from replay.frames import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameError, FrameTooLarge
from replay.sdk.state import SessionState, StateError

__all__ = ["Handler", "Server", "ServerStatistics", "Session", "SessionStatus"]

log = logging.getLogger("ferryman.sdk")

#: Optional protocol features every SDK server advertises in ``attached`` (docs/protocol.md).
FEATURES: tuple[str, ...] = (RESTORE_DELTAS,)

Handler = Callable[["Session", bytes], Awaitable[bytes | None]]
ErrorHook = Callable[["Session", bytes, BaseException], bytes | None]
DetachHook = Callable[["Session"], None]
AckHook = Callable[["Session", int], None]


class SessionStatus(enum.Enum):
    ATTACHED = "attached"  # applying requests
    FENCED = "fenced"  # applies nothing; may be re-attached or released
    RELEASED = "released"  # the session moved away; state dropped
    CLOSED = "closed"  # the connection closed; state dropped


class Session:
    """One session as bound to one proxy connection: what a handler receives.

    ``state`` holds the partitions; ``sid``, ``epoch`` and ``status`` describe the binding; ``seq`` is the
    seq of the request being applied (0 outside requests).  ``requires_ack`` is what the proxy's
    ``attach`` said; ``acked_seq`` is the highest seq whose state changes (and every earlier request's)
    the proxy acknowledged as durably stored on this connection (0: none yet).  ``client`` is the
    client's ``(ip, port)``: from the ``attach`` that carried it, else from the connection's PROXY header
    (``accept_proxy``), else ``None`` (docs/sdk.md).  Do not keep a ``Session`` beyond ``status``
    leaving ``ATTACHED`` except to read it.
    """

    __slots__ = (
        "_conn",
        "acked_seq",
        "client",
        "epoch",
        "requires_ack",
        "seq",
        "server",
        "sid",
        "state",
        "status",
        "token",
    )

    def __init__(self, server: Server, conn: _Connection, sid: str, epoch: int) -> None:
        self.server = server
        self.sid = sid
        self.epoch = epoch
        self.state = SessionState()
        self.status = SessionStatus.ATTACHED
        self.seq = 0
        self.acked_seq = 0
        self.requires_ack = False
        self.token: str | None = None  # set when the proxy issued the session id (docs/protocol.md)
        self.client: tuple[str, int] | None = conn.proxy_client
        self._conn: _Connection | None = conn

    @property
    def live(self) -> bool:
        """True while requests are being applied here (not fenced, released or closed)."""
        return self.status is SessionStatus.ATTACHED

    def push(self, body: bytes) -> bool:
        """Send ``body`` to the client now (server push); False if the session is not live here.

        Outside a request the push also reports the session's unreported state changes (a version
        per changed partition).  Inside a request, changes stay with that request's ``res``, so the
        request remains atomic; the push itself goes out before the ``res``.
        """
        conn = self._conn
        if conn is None or self.status is not SessionStatus.ATTACHED or conn.closing:
            return False
        if type(body) is not bytes:
            body = bytes(body)
        state = self.state
        if state.in_request or not state.has_changes:
            frame = encode_frame(Push(body), conn.max_frame_bytes)
        else:
            deltas = state.collect()
            frame = encode_frame(Push(body, deltas), conn.max_frame_bytes)
            state.commit(deltas)
        conn.transport.write(frame)  # type: ignore[union-attr]
        return True

    def __repr__(self) -> str:
        return f"<Session {self.sid!r} epoch={self.epoch} {self.status.value} {sorted(self.state)}>"


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    connections: int
    sessions: int
    requests_total: int
    missing_total: int
    fences_total: int
    handler_errors_total: int
    protocol_errors_total: int


class _Connection(asyncio.Protocol):
    """One proxy connection (see the module docstring)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.max_frame_bytes = server.max_frame_bytes
        self.decoder = FrameDecoder(max_frame_bytes=server.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.queue: deque[Any] = deque()
        self.wake: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.expected_seq = 1  # seq of the next req to apply
        self.last_seq = 0  # highest seq applied for the session (expected_seq - 1)
        self.discarding = False  # after `missing`: drop reqs until the missing seq comes again
        self.reading_paused = False
        self.writable: asyncio.Event = asyncio.Event()
        self.writable.set()
        self.proxy_client: tuple[str, int] | None = None  # the PROXY header's source (accept_proxy)
        if server.accept_proxy:
            self.decoder = proxy_protocol.HeaderStage(  # type: ignore[assignment]
                self.decoder, self._proxy_header, self.proxy_header_refused
            )

    # -- asyncio callbacks --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server._conns.add(self)
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.server._tasks.add(self.task)
        self.task.add_done_callback(self.server._worker_done)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            self.fail(FRAME_TOO_LARGE, str(exc))
            return
        queue = self.queue
        for frame in frames:
            try:
                env = decode_from_proxy(frame)
            except EnvelopeError as exc:
                self.fail(exc.code, str(exc))
                return
            kind = type(env)
            if (kind is Fence or kind is Release) and queue:
                # Requests received before a fence or release and not started yet are dropped
                # unanswered (docs/protocol.md, "fence"); only the running handler finishes first.
                kept = [e for e in queue if type(e) is not Req]
                if len(kept) != len(queue):
                    queue.clear()
                    queue.extend(kept)
            queue.append(env)
        if queue:
            wake = self.wake
            if wake is not None and not wake.done():
                wake.set_result(None)
            if len(queue) > self.server.max_queued and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        try:
            self.decoder.eof()
        except FrameError:
            pass  # the connection is going away: a truncated frame is moot
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._detach(SessionStatus.CLOSED)
        self.server._conns.discard(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- helpers ------------------------------------------------------------------------------------

    def send(self, envelope: Any) -> None:
        self.transport.write(encode_frame(envelope, self.max_frame_bytes))  # type: ignore[union-attr]

    def fail(self, code: str, message: str, seq: int | None = None) -> None:
        """Protocol error: send ``error`` and close this connection (every v1 error code is fatal)."""
        if self.closing:
            return
        self.server.protocol_errors_total += 1
        try:
            self.send(Error(code, message[:1000], seq))
        except (EnvelopeError, FrameTooLarge):  # pragma: no cover - an Error always encodes
            pass
        self.closing = True
        self.queue.clear()
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        self.transport.close()  # type: ignore[union-attr]

    def _proxy_header(self, header: proxy_protocol.ProxyHeader, consumed: int, decoder: FrameDecoder) -> None:
        if header.source_ip is not None:  # None: v1 UNKNOWN, v2 LOCAL or UNSPEC
            self.proxy_client = (header.source_ip, header.source_port or 0)
        self.decoder = decoder

    def proxy_header_refused(self, reason: str) -> None:
        """``accept_proxy``: the connection does not start with a valid PROXY header."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        log.warning(
            "sdk_proxy_header_refused",
            extra={"server": self.server.name, "peer": peer and f"{peer[0]}:{peer[1]}", "error": reason},
        )
        self.fail(BAD_ENVELOPE, f"PROXY protocol header expected: {reason}")

    def _check_epoch(self, sid: str, epoch: int) -> bool:
        highest = self.server._highest_epoch(sid)
        if epoch < highest:
            self.fail(STALE_EPOCH, f"epoch {epoch} is below {highest}, the highest seen for this session")
            return False
        return True

    def _detach(self, status: SessionStatus) -> None:
        session = self.session
        if session is None:
            return
        self.session = None
        session.status = status
        session.state.freeze(status.value)
        session._conn = None
        self.server._unbind(session, self)

    # -- the worker ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self.queue
        writable = self.writable
        while not self.closing:
            if not queue:
                if self.reading_paused:
                    self.reading_paused = False
                    self.transport.resume_reading()  # type: ignore[union-attr]
                self.wake = loop.create_future()
                await self.wake
                self.wake = None
                continue
            if not writable.is_set():
                await writable.wait()
                continue
            env = queue.popleft()
            kind = type(env)
            if kind is Req:
                await self._apply(env)
            elif kind is Attach:
                self._attach(env)
            elif kind is Restore:
                self._restore(env)
            elif kind is Fence:
                self._fence(env)
            elif kind is Release:
                self._release(env)
            else:
                self._ack(env)

    async def _apply(self, req: Req) -> None:
        session = self.session
        if session is None:
            self.fail(UNKNOWN_SESSION, "req on a connection without a session", req.seq)
            return
        if session.status is not SessionStatus.ATTACHED:
            return  # fenced: applies nothing more
        seq = req.seq
        if seq != self.expected_seq:
            if self.discarding and seq > self.expected_seq:
                return  # sent before the proxy saw our `missing`; it will send it again
            self.fail(BAD_SEQ, f"req seq {seq}, expected {self.expected_seq}", seq)
            return
        self.discarding = False
        server = self.server
        state = session.state
        state.begin()
        session.seq = seq
        failure: BaseException | None = None
        body: Any = None
        try:
            body = await server._handler(session, req.body)  # type: ignore[misc]
        except asyncio.CancelledError:
            state.rollback()
            raise
        except Exception as exc:  # the application's fault; MissingPartition is checked below
            failure = exc
        session.seq = 0
        if self.session is not session or session.status is not SessionStatus.ATTACHED:
            state.rollback()  # released or closed meanwhile: nothing to report
            return
        server.requests_total += 1
        if state.missing:
            state.rollback()
            held = set(state)
            names = state.missing | {p for p in server.requires if p not in held}
            server.missing_total += 1
            self.discarding = True
            self.send(Missing(seq, tuple(sorted(names))))
            return
        frame = None
        deltas: dict[str, Delta] = {}
        if failure is None:
            if body is not None and type(body) is not bytes:
                if isinstance(body, bytearray | memoryview):
                    body = bytes(body)
                else:
                    failure = TypeError(f"handler returned {type(body).__name__}, not bytes or None")
            if failure is None:
                try:
                    deltas = state.collect()
                    frame = encode_frame(Res(seq, body, deltas), self.max_frame_bytes)
                except (StateError, EnvelopeError, FrameTooLarge) as exc:
                    failure = exc
        if failure is not None:
            state.rollback()
            server.handler_errors_total += 1
            body = server._error_body(session, req.body, failure)
            try:
                deltas = state.collect()  # changes made outside the request, if any
                frame = encode_frame(Res(seq, body, deltas), self.max_frame_bytes)
            except (StateError, EnvelopeError, FrameTooLarge):
                deltas = {}
                frame = encode_frame(Res(seq, None), self.max_frame_bytes)
        state.commit(deltas)
        state.end()
        self.expected_seq = seq + 1
        self.last_seq = seq
        self.transport.write(frame)  # type: ignore[union-attr, arg-type]

    def _load_digests(self, state: dict[str, Any], where: str) -> dict[str, int] | None:
        digests: dict[str, int] = {}
        for name, ps in state.items():
            try:
                digests[name] = digest(ps.data)
            except TypeError as exc:
                self.fail(EnvelopeError.code, f"{where}.state[{name!r}].data: {exc}")
                return None
        return digests

    def _attach(self, env: Attach) -> None:
        session = self.session
        if session is not None and session.sid != env.sid:
            self.fail(BAD_STATE, f"connection is bound to another session; attach for {env.sid!r} refused")
            return
        if not self._check_epoch(env.sid, env.epoch):
            return
        digests = self._load_digests(env.state, "attach")  # type: ignore[arg-type]
        if digests is None:
            return
        server = self.server
        if session is None:
            session = Session(server, self, env.sid, env.epoch)
            self.session = session
            server._bind(session)
        else:  # re-attach (after a rolled-back migration): keep what is held unless replaced
            session.epoch = env.epoch
            session.status = SessionStatus.ATTACHED
            session.state.thaw()
        server._see_epoch(env.sid, env.epoch)
        session.requires_ack = env.requires_ack
        if env.token is not None:
            session.token = env.token
        if env.client is not None:
            # The proxy's view of the client wins over the PROXY header's: it survives a hop between
            # the proxy and this server that sends a header of its own (docs/sdk.md).
            session.client = env.client
        state = session.state
        for name, ps in env.state.items():
            state.load(name, ps.version, ps.data, digests[name])  # type: ignore[arg-type]
        for name in state:
            if name not in digests:
                digests[name] = state.digest(name)
        self.expected_seq = env.next_seq
        self.last_seq = env.next_seq - 1
        self.discarding = False
        self.send(Attached(env.sid, env.epoch, digests, state.versions(), server.requires, FEATURES))

    def _restore(self, env: Restore) -> None:
        session = self.session
        if session is None:
            self.fail(UNKNOWN_SESSION, "restore on a connection without a session")
            return
        if session.status is not SessionStatus.ATTACHED:
            self.fail(BAD_STATE, f"restore refused: the session is {session.status.value}")
            return
        if not self._check_epoch(session.sid, env.epoch):
            return
        state = session.state
        for name, delta in env.deltas.items():
            # A delta applies to exactly the version it was computed from (docs/protocol.md, "restore").
            held = state[name].version if name in state else None
            if held != delta.base:
                self.fail(
                    BAD_STATE,
                    f"restore delta for {name!r} is from version {delta.base}, but "
                    + ("the partition is not held" if held is None else f"version {held} is held"),
                )
                return
            if state.pending(name):
                self.fail(BAD_STATE, f"restore delta for {name!r}: the partition has unreported changes")
                return
        digests = self._load_digests(env.state, "restore")  # type: ignore[arg-type]
        if digests is None:
            return
        self.server._see_epoch(session.sid, env.epoch)
        session.epoch = env.epoch
        for name, ps in env.state.items():
            state.load(name, ps.version, ps.data, digests[name])  # type: ignore[arg-type]
        for name, delta in env.deltas.items():
            state.apply_delta(name, delta.version, delta.set_, delta.delete)
            try:
                digests[name] = state.digest(name)
            except TypeError as exc:
                self.fail(BAD_ENVELOPE, f"restore.deltas[{name!r}]: {exc}")
                return
        # Digests of everything held, not only what was restored: the proxy checks the target's whole
        # replayed state (docs/protocol.md, "restored"); untouched partitions come from the cache.
        for name in state:
            if name not in digests:
                digests[name] = state.digest(name)
        self.send(Restored(env.epoch, digests, state.versions()))

    def _fence(self, env: Fence) -> None:
        session = self.session
        if session is None:
            self.fail(UNKNOWN_SESSION, "fence on a connection without a session")
            return
        if not self._check_epoch(session.sid, env.epoch):
            return
        self.server._see_epoch(session.sid, env.epoch)
        state = session.state
        deltas: dict[str, Delta] | Any = EMPTY
        if session.status is SessionStatus.ATTACHED:
            try:
                deltas = state.collect()  # changes made outside requests and not yet reported
                frame = encode_frame(Fenced(env.epoch, self.last_seq, deltas), self.max_frame_bytes)
            except (StateError, EnvelopeError, FrameTooLarge) as exc:
                log.error("sdk_fence_deltas_dropped", extra={"sid": session.sid, "error": str(exc)})
                deltas = EMPTY
                frame = encode_frame(Fenced(env.epoch, self.last_seq), self.max_frame_bytes)
            state.commit(deltas)
            session.status = SessionStatus.FENCED
            state.freeze("fenced")
            self.server.fences_total += 1
        else:
            frame = encode_frame(Fenced(env.epoch, self.last_seq), self.max_frame_bytes)
        session.epoch = env.epoch
        self.transport.write(frame)  # type: ignore[union-attr]

    def _release(self, env: Release) -> None:
        session = self.session
        if session is None:
            self.fail(UNKNOWN_SESSION, "release on a connection without a session")
            return
        # Honoured at any epoch: it can only drop this connection's own copy (docs/protocol.md).
        self.server._see_epoch(session.sid, env.epoch)
        self.discarding = False
        self._detach(SessionStatus.RELEASED)

    def _ack(self, env: Ack) -> None:
        session = self.session
        if session is None:
            self.fail(UNKNOWN_SESSION, "ack on a connection without a session")
            return
        if env.seq > session.acked_seq:
            session.acked_seq = env.seq
            hook = self.server.on_ack
            if hook is not None:
                try:
                    hook(session, env.seq)
                except Exception:
                    log.exception("sdk_ack_hook_failed")


class Server:
    """An envelope-dialect backend server.

    >>> server = Server("s1", requires=("auth", "game"))
    >>> @server.handler
    ... async def on_frame(session, body):
    ...     game = session.state["game"]
    ...     game["hits"] = game.get("hits", 0) + 1
    ...     return b"ok"

    ``await server.serve(host, port)`` serves until cancelled; or ``await server.start(host, port)``
    (returns the bound address) and later ``await server.close()``.
    """

    def __init__(
        self,
        name: str,
        requires: Iterable[str] = (),
        handler: Handler | None = None,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_queued: int = 1024,
        on_error: ErrorHook | None = None,
        on_detach: DetachHook | None = None,
        on_ack: AckHook | None = None,
        epoch_memory: int = 65536,
        close_timeout_s: float = 5.0,
        accept_proxy: bool = False,
    ) -> None:
        self.name = name
        self.requires: tuple[str, ...] = tuple(requires)
        for p in self.requires:
            try:
                validate_partition_name(p)
            except EnvelopeError as exc:
                raise ValueError(str(exc)) from None
        self._handler = handler
        self.max_frame_bytes = max_frame_bytes
        self.max_queued = max_queued
        self.on_error = on_error
        self.on_detach = on_detach
        self.on_ack = on_ack
        self.epoch_memory = epoch_memory
        self.close_timeout_s = close_timeout_s
        # Every connection starts with a PROXY protocol v1 or v2 header (a pool's send_proxy).
        self.accept_proxy = accept_proxy
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._bound: dict[str, list[_Connection]] = {}
        # Highest epoch seen per session id: for sessions bound here, and (bounded, least recently
        # seen first) for sessions that left, so a late envelope from an old owner is still refused.
        self._epochs: dict[str, int] = {}
        self._past_epochs: OrderedDict[str, int] = OrderedDict()
        self._listener: asyncio.AbstractServer | None = None
        self.address: tuple[str, int] | None = None
        self.requests_total = 0
        self.missing_total = 0
        self.fences_total = 0
        self.handler_errors_total = 0
        self.protocol_errors_total = 0

    # -- the application's side ---------------------------------------------------------------------

    def handler(self, fn: Handler) -> Handler:
        """Decorator: register the request handler ``async def fn(session, body) -> bytes | None``."""
        self._handler = fn
        return fn

    def session(self, sid: str) -> Session | None:
        """The live session ``sid`` on this server (the most recently attached), if any."""
        conns = self._bound.get(sid)
        if not conns:
            return None
        return conns[-1].session

    def sessions(self) -> list[Session]:
        """Every session bound to a connection of this server."""
        return [c.session for conns in self._bound.values() for c in conns if c.session is not None]

    def push(self, sid: str, body: bytes) -> bool:
        """Server push to session ``sid``'s client; False if the session is not live here."""
        session = self.session(sid)
        return session is not None and session.push(body)

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            connections=len(self._conns),
            sessions=sum(len(c) for c in self._bound.values()),
            requests_total=self.requests_total,
            missing_total=self.missing_total,
            fences_total=self.fences_total,
            handler_errors_total=self.handler_errors_total,
            protocol_errors_total=self.protocol_errors_total,
        )

    # -- serving ------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = any free port); return the bound address."""
        if self._handler is None:
            raise ValueError(f"server {self.name!r} has no handler: decorate one with @server.handler")
        if self._listener is not None:
            raise RuntimeError(f"server {self.name!r} is already listening")
        loop = asyncio.get_running_loop()
        kwargs.setdefault("reuse_address", True)
        self._listener = await loop.create_server(lambda: _Connection(self), host, port, **kwargs)
        sockname = self._listener.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def serve(self, host: str = "127.0.0.1", port: int = 0, ready: asyncio.Event | None = None) -> None:
        """Listen and serve until cancelled; ``ready`` is set once listening (``self.address``)."""
        await self.start(host, port)
        try:
            if ready is not None:
                ready.set()
            await asyncio.Future()  # until cancelled
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, close every connection and wait for their workers (``close_timeout_s``)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for conn in list(self._conns):
            conn.closing = True
            if conn.transport is not None:
                conn.transport.close()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        try:
            async with asyncio.timeout(self.close_timeout_s):
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
                if listener is not None:
                    await listener.wait_closed()
        except TimeoutError:
            log.error(
                "sdk_close_timed_out", extra={"server": self.name, "close_timeout_s": self.close_timeout_s}
            )

    # -- bookkeeping (called by connections) ----------------------------------------------------------

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sdk_worker_failed", exc_info=task.exception())

    def _error_body(self, session: Session, body: bytes, exc: BaseException) -> bytes | None:
        hook = self.on_error
        if hook is None:
            log.error("sdk_handler_failed", exc_info=exc, extra={"sid": session.sid, "server": self.name})
            return None
        try:
            reply = hook(session, body, exc)
        except Exception:
            log.exception("sdk_error_hook_failed")
            return None
        return bytes(reply) if isinstance(reply, bytes | bytearray | memoryview) else None

    def _highest_epoch(self, sid: str) -> int:
        highest = self._epochs.get(sid)
        return self._past_epochs.get(sid, 0) if highest is None else highest

    def _see_epoch(self, sid: str, epoch: int) -> None:
        epochs = self._epochs
        if sid in epochs:
            if epoch > epochs[sid]:
                epochs[sid] = epoch
            return
        past = self._past_epochs
        if sid in past:
            if epoch > past[sid]:
                past[sid] = epoch
            past.move_to_end(sid)

    def _bind(self, session: Session) -> None:
        assert session._conn is not None
        sid = session.sid
        conns = self._bound.get(sid)
        if conns is None:
            self._bound[sid] = [session._conn]
            self._epochs[sid] = max(self._past_epochs.pop(sid, 0), session.epoch)
        else:
            conns.append(session._conn)

    def _unbind(self, session: Session, conn: _Connection) -> None:
        sid = session.sid
        conns = self._bound.get(sid)
        if conns is not None:
            if conn in conns:
                conns.remove(conn)
            if not conns:
                del self._bound[sid]
                past = self._past_epochs
                past[sid] = self._epochs.pop(sid, session.epoch)
                while len(past) > self.epoch_memory:
                    past.popitem(last=False)
        hook = self.on_detach
        if hook is not None:
            try:
                hook(session)
            except Exception:
                log.exception("sdk_detach_hook_failed")
