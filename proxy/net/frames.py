"""The ``frames`` listener mode: session-aware relaying in the envelope dialect, and live migration.

Theory of operation
-------------------
A client speaks length-prefixed frames (``replay.frames``; header size, byte order and
``max_frame_bytes`` per listener).  Its first frame names the session (a msgpack map's
``session_field``, default ``sid``; a client without one gets a fresh id) and, when the listener has a
``session_secret``, proves it with an HMAC token (``replay.tokens``).  Placement hashes the session id.

Each client connection has one backend link at a time (:class:`BackendLink`), bound to the session with
``attach`` at an epoch (every ``attach`` carries the client's address); the proxy numbers the client's
frames (``seq``) and wraps each in a ``req``.
Replies (``res``) and pushes carry state deltas, applied to the partition store before the body goes
to the client, so the store always holds every change a client has seen the effect of.  A ``missing``
answer makes the proxy ``restore`` the partitions from the store and resend the request and every one
after it (the backend discards those until the first comes back).

Moving the connection is :class:`replay.migration.Migration`'s business (sans-IO): this shell performs
its actions (connect the target, send envelopes, pause and resume the client at a frame boundary,
flip the route) and feeds it the links' envelopes, failures and phase timeouts.  When the backend dies
outside a migration, the same machine rebuilds the session on another server from the store; requests
the dead backend never answered get an ``unknown_outcome`` error frame unless their ``op`` is listed in
the pool's ``idempotent``.

What the client sees: its frames, answered in order, exactly once; during a migration a pause.  Error
frames the proxy itself sends are msgpack maps ``{"error": <code>, "message": <text>}``.

Bounded memory: at most ``max_buffered_bytes`` of client frames wait (for the backend's ``attached``, a
``restored`` or a migration); past that, reading from the client pauses.  Backend links have the
listener's write-buffer water marks in both directions, like ``tcp`` mode.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import secrets
import struct
import time
from typing import TYPE_CHECKING, Any

import msgpack

from proxy.core import proxy_protocol
from proxy.core.connection import (
    UPSTREAM_CONNECTED,
    ClientLost,
    Close,
    ConnectUpstream,
    ConnState,
    HeaderInvalid,
    StartRelay,
    TimedOut,
    UpstreamFailed,
)
from proxy.core.hashing import key_hash
from proxy.net.relay import describe_error
from replay import envelope as env_mod
from replay import migration as mig
from replay import tokens
from replay.acks import AckTracker
from replay.envelope import Ack, Attach, Attached, Error, Fenced, Missing, Push, Req, Res, Restore, Restored
from replay.frames import FrameDecoder, FrameEncoder, FrameError, FrameTooLarge
from replay.store.base import StoreError

# The compiled steady-state path (replay/_speedups.c); the Python path below does the same work, and
# is what runs when the extension was not built or FERRYMAN_NO_SPEEDUPS=1.
_speedups: Any = None
if os.environ.get("FERRYMAN_NO_SPEEDUPS") != "1":
    try:
        from replay import _speedups
    except ImportError:  # built without a C compiler
        pass

if TYPE_CHECKING:
    from proxy.core.pool import ServerState
    from proxy.net.listener import Listener

#: Backend links are trusted more than clients but still bounded: an envelope carries a client frame
#: plus state (attach and restore carry whole partitions).
MAX_ENVELOPE_BYTES = 64 << 20

#: Packs hot-path envelopes; one per process is safe (only the event loop's thread uses it).
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def error_frame_body(code: str, message: str) -> bytes:
    return msgpack.packb({"error": code, "message": message}, use_bin_type=True)


UNKNOWN_OUTCOME_BODY = error_frame_body(
    "unknown_outcome", "the server handling this request failed before answering; it may or may not have been applied"
)


def next_epoch(previous: int) -> int:
    """A new epoch for a session: above ``previous`` and above every epoch an earlier proxy process
    gave (microseconds since the epoch), so a restarted proxy is never refused as stale."""
    return max(previous + 1, time.time_ns() // 1000)


class BackendLink(asyncio.Protocol):
    """One proxy-to-backend connection in the envelope dialect, owned by a :class:`FramesClient`."""

    __slots__ = ("closed", "decoder", "decoder_buf", "nbytes", "owner", "server", "transport", "write_paused")

    def __init__(self, owner: FramesClient, server: ServerState) -> None:
        self.owner = owner
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_frame_bytes=MAX_ENVELOPE_BYTES)
        self.decoder_buf = self.decoder.buffer  # empty exactly when the stream is at a frame boundary
        self.nbytes = 0
        self.closed = False
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.closed:  # given up on while connecting
            transport.close()
            return
        high, low = self.owner.listener.water_marks
        self.transport.set_write_buffer_limits(high, low)  # type: ignore[union-attr]
        header = self.owner.proxy_header
        if header is not None:
            self.transport.write(header)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        owner = self.owner
        if owner.unwrap is not None and owner.link is self and owner.migration is None and not self.decoder_buf:
            # The steady state in one compiled call: every leading plain reply goes to the client;
            # whatever follows (any other envelope, a partial one) takes the Python path below.
            out, count, nbody, end = owner.unwrap(data)
            if out is not None:
                owner.progressed = True
                owner.frames_out += count
                owner.bytes_out += nbody
                owner.transport.write(out)
                if owner.client_eof:
                    owner._maybe_finished()
            if end == len(data):
                return
            data = data[end:]
        try:
            payloads = self.decoder.feed(data)
        except FrameError as exc:
            self.owner.link_failed(self, f"bad frame from server: {exc}")
            return
        decode = env_mod.decode_from_backend
        unpackb = msgpack.unpackb
        for payload in payloads:
            if self.closed:
                return
            # Fast path for the common reply, {"t": "res", "seq": N, "body": B} and nothing else: the
            # same checks the full decoder makes for this shape, without building an envelope object.
            try:
                m = unpackb(payload)
            except Exception:  # the full decoder below says what is wrong
                m = None
            # Only "t", "seq" and "body" may be there: a res carrying deltas takes the full decoder.
            if type(m) is dict and m.get("t") == "res" and len(m) == 2 + ("body" in m):
                seq = m.get("seq")
                body = m.get("body")
                if type(seq) is int and 0 < seq <= 0xFFFFFFFFFFFFFFFF and (body is None or type(body) is bytes):
                    if (
                        body is not None
                        and owner.fast_replies
                        and owner.link is self
                        and owner.migration is None
                        and owner.inflight.pop(seq, None) is not None
                    ):
                        # The steady state, inline: the reply goes straight to the client.
                        owner.progressed = True
                        owner.frames_out += 1
                        owner.bytes_out += len(body)
                        owner.transport.write(owner.header_of(len(body)) + body)
                        if owner.client_eof:
                            owner._maybe_finished()
                        continue
                    owner.res_received(self, seq, body)
                    continue
            try:
                envelope = decode(payload)
            except env_mod.EnvelopeError as exc:
                self.owner.link_failed(self, f"bad envelope from server: {exc}")
                return
            owner.from_link(self, envelope)

    def eof_received(self) -> bool:
        self.owner.link_failed(self, "server closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.owner.link_failed(self, describe_error(exc) or "server closed the connection")

    def pause_writing(self) -> None:
        # The server is not reading fast enough: stop reading from the client (if it is the client's
        # link; a target being loaded with state does not hold the client back).
        self.write_paused = True
        self.owner.sync_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.owner.sync_reading()

    def send(self, envelope: Any) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(env_mod.encode_frame(envelope, MAX_ENVELOPE_BYTES))

    def send_req(self, seq: int, body: bytes) -> None:
        """``req`` without building an envelope object (the hot path: one per client frame)."""
        transport = self.transport
        if transport is not None and not self.closed:
            payload = _pack({"t": "req", "seq": seq, "body": body})
            transport.write(len(payload).to_bytes(4, "big") + payload)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class FramesClient(asyncio.Protocol):
    """Client half of a ``frames`` connection, and owner of its backend link(s)."""

    #: The protocol of a backend connection (the plain dialect's client replaces it).
    link_class: type[BackendLink] = BackendLink
    #: Whether the compiled steady-state path may carry this client's frames and replies (the plain
    #: dialect forwards frames its own way).
    compiled_path = True

    # Slots, not a __dict__: with hundreds of connections the per-read attribute traffic is cache
    # misses, and compact instances measured 4-5% more messages per second at 256 connections.
    __slots__ = (
        "__weakref__", "_target_server", "_target_task", "acks", "attached", "bytes_out", "client_eof",
        "client_write_paused", "closed", "conn", "connect_deadline_s", "connect_task", "decoder",
        "decoder_buf", "encoder", "epoch", "expected", "fast_replies", "frames_in", "frames_out",
        "header_of", "header_timer", "held", "idle_s", "inflight", "last_activity", "link", "listener",
        "max_buffered", "migration", "migration_done", "migration_phase", "migration_timer", "migrations",
        "nbytes", "next_seq", "nreads", "pending", "pending_bytes", "progressed", "proxy_header",
        "reading_off", "reading_paused", "restoring_from", "runtime", "sid", "source", "target", "token",
        "transport", "unwrap", "wrap",
    )  # fmt: skip

    def __init__(self, listener: Listener) -> None:
        settings = listener.settings
        self.listener = listener
        self.runtime = listener.runtime
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: Any = None  # proxy.core.connection.Connection
        self.decoder = FrameDecoder(
            header_bytes=settings.frame_header_bytes,
            byteorder=settings.frame_byteorder,
            max_frame_bytes=settings.max_frame_bytes,
        )
        self.encoder = FrameEncoder(header_bytes=settings.frame_header_bytes, byteorder=settings.frame_byteorder)
        self.header_of = self.encoder.header
        # With 4- or 8-byte headers every reply fits (backend envelopes are capped far below 4 GiB),
        # so replies skip FrameEncoder.header's length check, and may take the inline reply path.
        self.fast_replies = settings.frame_header_bytes in (4, 8)
        if self.fast_replies:
            order = ">" if settings.frame_byteorder == "big" else "<"
            self.header_of = struct.Struct(order + ("I" if settings.frame_header_bytes == 4 else "Q")).pack
        self.max_buffered = settings.max_buffered_bytes
        self.decoder_buf = self.decoder.buffer  # empty exactly when the stream is at a frame boundary
        # Fields the listener reads (shared with tcp mode's ClientSide).
        self.nbytes = 0
        self.nreads = 0
        self.bytes_out = 0
        self.connect_task: asyncio.Task[Any] | None = None
        self.connect_deadline_s = 0.0
        self.header_timer: asyncio.TimerHandle | None = None  # accept_proxy: until the header is complete
        self.idle_s = 0.0
        self.last_activity = 0
        self.closed = False
        # Session.
        self.sid: str | None = None
        self.token: str | None = None  # issued for a fresh id when the listener signs ids
        self.epoch = 0
        self.link: BackendLink | None = None
        self.attached = False
        self.next_seq = 1
        self.inflight: dict[int, bytes] = {}  # seq -> client frame, sent and not yet answered
        # The compiled steady state (both directions), when built; None means the Python path.  It
        # binds ``inflight``, which is only ever changed in place.
        self.wrap: Any = None
        self.unwrap: Any = None
        if self.compiled_path and _speedups is not None:
            big = settings.frame_byteorder == "big"
            hsize = settings.frame_header_bytes
            self.wrap = functools.partial(_speedups.wrap_reqs, hsize, big, settings.max_frame_bytes, self.inflight)
            if self.fast_replies:
                self.unwrap = functools.partial(_speedups.unwrap_res, self.inflight, hsize, big)
        self.pending: collections.deque[bytes] = collections.deque()  # client frames not sent yet
        self.pending_bytes = 0
        self.reading_paused = False  # too many client bytes waiting in ``pending``
        self.reading_off = False  # the client transport's reading is paused (for either reason)
        self.client_write_paused = False
        self.held = True  # forwarding stopped: waiting for the session, attached, restored, or a migration
        self.restoring_from: int | None = None  # seq of a request answered with missing
        self.expected: dict[str, int] = {}
        self.acks: AckTracker | None = None  # the pool sends acks (send_acks): replay.acks
        self.client_eof = False
        self.frames_in = 0
        self.frames_out = 0
        # Migration.
        self.migration: mig.Migration | None = None
        self.target: BackendLink | None = None
        self.migration_timer: asyncio.TimerHandle | None = None
        self.migration_phase: mig.Phase | None = None
        self.migration_done: asyncio.Future[dict[str, Any]] | None = None
        self.migrations = 0
        self.progressed = True  # a request was answered since the last migration (or none waits)
        self._target_server: ServerState | None = None
        self._target_task: asyncio.Task[Any] | None = None
        self.source: BackendLink | None = None  # the link a migration moves away from
        # The pool's PROXY header (send_proxy) for this client, written first on every backend link:
        # the first server's and those a migration or rebuild moves the session to.
        self.proxy_header: bytes | None = None

    # -- client side: asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.listener.accepted(self, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.nreads += 1
        if self.wrap is not None and not self.held and not self.pending and not self.closed and not self.decoder_buf:
            # The steady state in one compiled call: every complete frame is numbered, recorded in
            # flight and wrapped in a req, as _forward does; the rest (a partial or oversized frame)
            # takes the Python path below.  (``held`` is true until the session is known.)
            seq = self.next_seq
            out, self.next_seq, end = self.wrap(data, seq)
            if out is not None:
                link = self.link
                count = self.next_seq - seq
                self.frames_in += count
                link.server.frames_total += count  # type: ignore[union-attr]
                if not link.closed:  # type: ignore[union-attr]
                    link.transport.write(out)  # type: ignore[union-attr]
            if end == len(data):
                return
            data = data[end:]
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            self._client_error("frame_too_large", str(exc))
            return
        except FrameError as exc:
            self._client_error("bad_frame", str(exc))
            return
        for body in frames:
            if self.closed:
                return
            self.frames_in += 1
            if self.sid is None:
                if not self._first_frame(body):
                    return
            if self.held or self.pending:
                self._hold(body)
            else:
                self._forward(body)

    def eof_received(self) -> bool:
        try:
            self.decoder.eof()
        except FrameError as exc:
            self._client_error("bad_frame", str(exc))
            return False
        self.client_eof = True
        self._maybe_finished()
        return True  # keep writing the replies still owed

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        if conn is not None and conn.state is not ConnState.CLOSED:
            if self.migration is not None:
                self._migration_event(mig.ClientGone())
            self.apply(conn.handle(ClientLost(describe_error(exc))))

    def pause_writing(self) -> None:
        # The client is not reading fast enough: stop reading replies from its server.
        self.client_write_paused = True
        link = self.link
        if link is not None and link.transport is not None and not link.closed:
            link.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client_write_paused = False
        link = self.link
        if link is not None and link.transport is not None and not link.closed:
            link.transport.resume_reading()

    # -- accept_proxy: the PROXY header before the first frame -----------------------------------

    def expect_proxy_header(self) -> None:
        """Called at accept on an ``accept_proxy`` listener (which also starts ``header_timer``): the
        stream starts with a PROXY protocol v1 or v2 header, parsed as in tcp mode, then the frames."""
        self.decoder = proxy_protocol.HeaderStage(self.decoder, self._proxy_header, self._proxy_header_invalid)

    def _proxy_header(self, header: proxy_protocol.ProxyHeader, consumed: int, decoder: FrameDecoder) -> None:
        self.nbytes -= consumed  # the header is ours, not the client's payload
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.conn.take_header(header)
        self.decoder = decoder

    def _proxy_header_invalid(self, reason: str) -> None:
        """A bad header closes the connection as tcp mode does (``proxy_protocol_error``, without an
        error frame: the client has not been shown to speak frames)."""
        if not self.closed:
            self.apply(self.conn.handle(HeaderInvalid(reason)))

    # -- client frames ---------------------------------------------------------------------------

    def _first_frame(self, body: bytes) -> bool:
        """Find the session in the first frame; False if the connection was closed for it."""
        settings = self.listener.settings
        sid: Any = None
        msg: Any = None
        try:
            msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception:  # a client's bytes: anything undecodable simply names no session
            msg = None
        if type(msg) is dict:
            sid = msg.get(settings.session_field)
        runtime = self.runtime
        if sid is None:
            sid = secrets.token_urlsafe(16)
            if settings.session_secret is not None:
                self.token = tokens.sign(settings.session_secret, sid)
        else:
            try:
                env_mod.validate_sid(sid, settings.session_field)
            except env_mod.EnvelopeError as exc:
                self._client_error("bad_session", str(exc))
                return False
            if settings.session_secret is not None:
                if not tokens.verify(settings.session_secret, sid, msg.get(settings.session_token_field)):
                    self._client_error("bad_session_token", "the session token does not match the session id")
                    return False
            holder = runtime.sessions.get(sid)
            if holder is not None and holder is not self and not holder.closed:
                if settings.session_secret is None:
                    # Without tokens nothing proves this client owns the session: refuse.
                    self._client_error("session_in_use", "the session is live on another connection")
                    return False
                # A proven owner reconnecting (its old connection may not know yet that it is gone).
                holder._client_error("session_taken_over", "the session reconnected on another connection")
        self.sid = sid
        runtime.sessions[sid] = self
        conn = self.conn
        conn.key = key_hash(sid)
        self.held = True  # until the backend is attached
        self.apply(conn.start(expect_proxy_header=False))
        return not self.closed

    def _hold(self, body: bytes) -> None:
        self.pending.append(body)
        self.pending_bytes += len(body)
        if self.pending_bytes > self.max_buffered and not self.reading_paused:
            self.reading_paused = True
            self.sync_reading()

    def _forward(self, body: bytes) -> None:
        seq = self.next_seq
        self.next_seq = seq + 1
        self.inflight[seq] = body
        self.link.server.frames_total += 1  # type: ignore[union-attr]
        self.link.send_req(seq, body)  # type: ignore[union-attr]

    def _release_held(self) -> None:
        """Forward the frames that waited, in order, unless something holds them again."""
        pending = self.pending
        while pending and not self.held and not self.closed:
            body = pending.popleft()
            self.pending_bytes -= len(body)
            self._forward(body)
        if not pending:
            self.pending_bytes = 0
        self.resume_client_reading()
        self._maybe_finished()

    def resume_client_reading(self) -> None:
        if self.reading_paused and self.pending_bytes <= self.max_buffered // 2:
            self.reading_paused = False
        self.sync_reading()

    def sync_reading(self) -> None:
        """Read from the client unless too much waits here or its server's link is full.  The link
        can change (migration) or close while paused, so the state is recomputed, not toggled."""
        if self.closed:
            return
        link = self.link
        off = self.reading_paused or (link is not None and link.write_paused and not link.closed)
        if off != self.reading_off:
            self.reading_off = off
            if off:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def send_to_client(self, body: bytes) -> None:
        self.frames_out += 1
        self.bytes_out += len(body)
        try:
            self.transport.write(self.header_of(len(body)) + body)
        except FrameTooLarge:
            # The client's framing cannot carry it (a 1- or 2-byte header): the reply is lost, say so.
            self.transport.write(self._error_frame("reply_too_large", "a reply was too large for the client's framing"))

    def _error_frame(self, code: str, message: str) -> bytes:
        body = error_frame_body(code, message)
        return self.header_of(len(body)) + body

    def _client_error(self, code: str, message: str) -> None:
        """Close the connection for the client's fault (or takeover), telling it why in one frame."""
        if self.closed:
            return
        self.runtime.log.info("frames_conn_refused", conn_id=self.conn.id, sid=self.sid, status=code, detail=message)
        try:
            self.transport.write(self._error_frame(code, message))
        except FrameTooLarge:
            pass
        self.apply([Close(code, message)])

    def _maybe_finished(self) -> None:
        if (
            self.client_eof
            and not self.inflight
            and not self.pending
            and self.migration is None
            and self.restoring_from is None
            and not self.closed
        ):
            self.apply([Close("client_closed")])

    # -- backend links ---------------------------------------------------------------------------

    def _open_link(self, server: ServerState, on_done: Any) -> tuple[BackendLink, asyncio.Task[Any]]:
        loop = self.listener.loop
        link = self.link_class(self, server)
        task = loop.create_task(loop.create_connection(lambda: link, server.host, server.port))
        task.add_done_callback(on_done)
        return link, task

    def _connect(self, action: ConnectUpstream) -> None:
        self.link, self.connect_task = self._open_link(action.server, self._connect_done)
        self.connect_deadline_s = time.monotonic() + self.conn.connect_timeout_s
        self.proxy_header = action.proxy_header

    def _connect_done(self, task: asyncio.Task[Any]) -> None:
        if task is not self.connect_task:
            return  # an earlier attempt, already given up on
        self.connect_task = None
        link = self.link
        if self.closed or link is None:
            if not task.cancelled() and task.exception() is None:
                task.result()[0].close()
            return
        if task.cancelled():
            self.link = None
            self.apply(self.conn.handle(UpstreamFailed("timeout")))
            return
        exc = task.exception()
        if exc is not None:
            self.link = None
            self.apply(self.conn.handle(UpstreamFailed(describe_error(exc) or "error")))
            return
        self.apply(self.conn.handle(UPSTREAM_CONNECTED))

    def connect_expired(self) -> None:
        """Called by the listener's sweep when a connect passed its deadline: fail it as a timeout."""
        task = self.connect_task
        if task is not None and not task.done():
            task.cancel()

    def _attach_link(self) -> None:
        """The first backend is connected: bind it to the session with the partitions it needs."""
        link = self.link
        assert link is not None and self.sid is not None
        self.epoch = next_epoch(self.epoch)
        state, _ = mig.required_state(self.runtime.store, self.sid, link.server.requires)
        self.expected = {name: ps.digest for name, ps in state.items()}
        if self.acks is None and self.runtime.pools[self.conn.pool.name].settings.send_acks:
            self.acks = AckTracker(self.next_seq - 1)  # decided once: a reload does not change it midway
            self.runtime.ack_clients.add(self)
        link.send(Attach(self.sid, self.epoch, state, self.next_seq, self.acks is not None, self.token, self.client_address))

    def res_received(self, link: BackendLink, seq: int, body: bytes | None) -> None:
        """A ``res`` without deltas, handled without an envelope object unless a migration runs."""
        if self.migration is not None or link is not self.link:
            self.from_link(link, Res(seq, body))
        else:
            self._answered(seq, body, None)

    def _answered(self, seq: int, body: bytes | None, deltas: Any) -> None:
        """The current server's ``res`` for request ``seq``: its deltas into the store, then the body
        to the client."""
        self.progressed = True
        if self.inflight.pop(seq, None) is None:
            self._backend_error(f"server answered request {seq}, which is not outstanding")
            return
        if deltas and not self._apply_deltas(deltas, seq):
            return
        if body is not None:
            self.send_to_client(body)
        if self.client_eof:
            self._maybe_finished()

    def from_link(self, link: BackendLink, envelope: Any) -> None:
        if self.migration is not None:
            if link is self.target:
                self._migration_event(mig.FromTarget(envelope))
                return
            if link is self.source:
                kind = type(envelope)
                if kind is Missing and self.migration.phase in (mig.Phase.CONNECTING, mig.Phase.ATTACHING):
                    # The source is not fenced yet: restore it now (a restore before the fence is
                    # applied first), or it would discard every later request until a rollback.
                    self._missing(envelope)
                    return
                if kind is Restored and self.migration.phase not in (mig.Phase.CONNECTING, mig.Phase.ATTACHING):
                    self.restoring_from = None  # fenced since: the unapplied requests go with the handoff
                    return
                if kind is Attached:
                    # The answer to the re-attach that ended the previous migration: nothing to
                    # release here, the migration decides when the client resumes.
                    return
                if kind is Res or kind is Push or kind is Fenced or kind is Missing or kind is Error:
                    # A missing after the fence: the request is among the unapplied ones, resent to
                    # the target on commit or to the re-attached source on rollback.
                    if self.acks is not None and kind is not Missing and kind is not Error and envelope.deltas:
                        self._deltas_written(envelope.seq if kind is Res else 0)  # the machine writes them
                    self._migration_event(mig.FromSource(envelope))
                    return
        if link is not self.link:
            return  # a link being closed: nothing it says matters any more
        kind = type(envelope)
        if kind is Res:
            self._answered(envelope.seq, envelope.body, envelope.deltas)
        elif kind is Push:
            if envelope.deltas and not self._apply_deltas(envelope.deltas):
                return
            self.send_to_client(envelope.body)
        elif kind is Attached:
            if any(envelope.digests.get(n) != d for n, d in self.expected.items()):
                self._backend_error("the server's partition digests differ from the proxy's after attach")
                return
            self.attached = True
            self.held = False
            self._release_held()
        elif kind is Missing:
            self._missing(envelope)
        elif kind is Restored:
            if any(envelope.digests.get(n) != d for n, d in self.expected.items()):
                self._backend_error("the server's partition digests differ from the proxy's after restore")
                return
            first = self.restoring_from
            self.restoring_from = None
            if first is not None:
                for seq, body in self.inflight.items():
                    if seq >= first:
                        link.send(Req(seq, body))
            self.held = False
            self._release_held()
        elif kind is Error:
            self._backend_error(f"server error {envelope.code}: {envelope.message}")
        # Fenced outside a migration cannot happen: the proxy fences only while migrating.

    def _missing(self, envelope: Missing) -> None:
        if envelope.seq not in self.inflight:
            self._backend_error(f"server said request {envelope.seq} misses partitions, but it is not outstanding")
            return
        if self.restoring_from is not None:
            return  # already restoring: the resend after it covers this request too
        state, _ = mig.required_state(self.runtime.store, self.sid, envelope.partitions)  # type: ignore[arg-type]
        self.expected = {name: ps.digest for name, ps in state.items()}
        self.restoring_from = envelope.seq
        self.held = True
        self.link.send(Restore(self.epoch, state))  # type: ignore[union-attr]

    def _apply_deltas(self, deltas: Any, seq: int = 0) -> bool:
        """Write a ``res`` (of request ``seq``) or ``push`` (``seq`` 0) delta to the store."""
        try:
            mig.apply_deltas(self.runtime.store, self.sid, deltas)  # type: ignore[arg-type]
        except StoreError as exc:
            self._backend_error(f"state delta refused by the store: {exc}")
            return False
        if self.acks is not None:
            self._deltas_written(seq)
        return True

    def _deltas_written(self, seq: int) -> None:
        """This session's deltas go into the store in the current commit round: no ack reaches ``seq``
        (0: a delta outside a request, which holds back the first request not answered yet) until
        that round is durable."""
        if not seq:
            seq = next(iter(self.inflight), self.next_seq)  # in flight in seq order: the lowest first
        self.acks.wrote(self.runtime.commit_rounds.current, seq)  # type: ignore[union-attr]

    def send_ack(self, durable_round: int) -> None:
        """After the runtime's group commit: tell the link serving the session the highest seq whose
        deltas, and those of every request before it, are durable now (replay.acks).  Not while a
        migration runs (which link serves the session is decided when it ends) or before ``attached``."""
        acks = self.acks
        link = self.link
        if acks is None or self.closed:
            return
        if (
            self.migration is not None
            or not self.attached
            or link is None
            or link.closed
            or link.transport is None
            or link.transport.is_closing()  # lost, and connection_lost not delivered yet
        ):
            acks.prune(durable_round)
            return
        seq = acks.due(durable_round, next(iter(self.inflight), self.next_seq) - 1)
        if seq:
            link.send(Ack(seq))
            link.server.acks_total += 1

    def _backend_error(self, message: str) -> None:
        """The backend broke the protocol: the connection cannot continue safely."""
        self.runtime.log.warning("frames_backend_error", conn_id=self.conn.id, sid=self.sid, detail=message)
        self._client_error("server_error", message)

    def link_failed(self, link: BackendLink, reason: str) -> None:
        link.close()
        if self.closed:
            return
        if self.migration is not None:
            if link is self.target:
                self._migration_event(mig.TargetFailed(reason))
            elif link is self.source:
                self.held = True  # nothing more goes to the dead server
                self._migration_event(mig.SourceFailed(reason))
            return
        if link is not self.link:
            return
        if self.conn.state is ConnState.CONNECTING:
            return  # the connect's own callback reports it
        server = link.server
        self.conn.pool.observe_health(server.name, False, f"lost: {reason}")
        self._rebuild(reason)

    # -- migration -------------------------------------------------------------------------------

    def start_migration(self, target: ServerState, *, source_lost: str | None = None) -> asyncio.Future[dict[str, Any]]:
        loop = self.listener.loop
        done: asyncio.Future[dict[str, Any]] = loop.create_future()
        link = self.link
        assert link is not None and self.sid is not None
        pool_settings = self.runtime.pools[self.conn.pool.name].settings
        idempotent_ops = pool_settings.idempotent
        self.migration = mig.Migration(
            sid=self.sid,
            epoch=self.epoch,
            source=link.server.name,
            target=target.name,
            source_requires=link.server.requires,
            target_requires=target.requires,
            store=self.runtime.store,
            inflight=self.inflight,
            next_seq=self.next_seq,
            now_s=time.monotonic(),
            idempotent=(lambda body: _op_of(body) in idempotent_ops) if idempotent_ops else (lambda body: False),
            requires_ack=self.acks is not None,
            client=self.client_address,
        )
        self.migration_phase = None
        self._begin_migration(target, done)
        actions = self.migration.start()
        if source_lost is not None:
            self.held = True  # nothing more goes to the dead server
            actions += self.migration.handle(mig.SourceFailed(source_lost), time.monotonic())
        self._run_migration_actions(actions)
        return done

    def _begin_migration(self, target: ServerState, done: asyncio.Future[dict[str, Any]]) -> None:
        """Bookkeeping every dialect's migration starts with: the source is the current link, and
        the target's slot is held from now on (bounded load counts it)."""
        self.migration_done = done
        self.source = self.link
        self._target_server = target
        self.conn.pool.acquire(target)
        self.runtime.migrations.started()

    def _flip_route(self) -> BackendLink:
        """Commit: the migration target becomes the connection's link and holds its server slot."""
        target = self.target
        assert target is not None
        self.link = target
        self.target = None
        if self.client_write_paused and target.transport is not None:
            target.transport.pause_reading()  # the client is still not reading: hold its replies back
        server = self.conn.server
        if server is not None:
            self.conn.pool.release(server, 0, 0)
        self.conn.server = target.server  # its slot was acquired when the migration started
        self._target_server = None
        return target

    def _rebuild(self, reason: str) -> None:
        """The backend died outside a migration: rebuild the session on another server."""
        pool = self.conn.pool
        dead = self.link.server  # type: ignore[union-attr]
        target = pool.pick(self.conn.key, {dead.name})
        if target is None:
            self._fail_inflight()
            self._client_error("no_server", f"server {dead.name} failed ({reason}) and no other server is available")
            return
        self.runtime.log.info("frames_rebuild", conn_id=self.conn.id, sid=self.sid, dead=dead.name, target=target.name)
        self.start_migration(target, source_lost=reason)

    def _fail_inflight(self) -> None:
        for _ in self.inflight:
            self.send_to_client(UNKNOWN_OUTCOME_BODY)
        self.inflight.clear()

    def _migration_event(self, event: Any) -> None:
        machine = self.migration
        if machine is None:
            return
        try:
            actions = machine.handle(event, time.monotonic())
        except StoreError as exc:  # a delta from the source the store refuses: as outside a migration
            self._backend_error(f"state delta refused by the store: {exc}")
            return
        self._run_migration_actions(actions)

    def _phase_timeout(self) -> None:
        self.migration_timer = None
        self._migration_event(mig.PhaseTimeout())

    def _run_migration_actions(self, actions: list[Any]) -> None:
        for action in actions:
            kind = type(action)
            if kind is mig.SendSource:
                envelope = action.envelope
                if type(envelope) is Attach:  # re-attach after a rollback: the session's new epoch
                    self.restoring_from = None  # re-attaching ends the source's discarding
                    self.epoch = envelope.epoch
                    self.expected = {n: ps.digest for n, ps in envelope.state.items()}
                if self.source is not None:
                    self.source.send(envelope)
            elif kind is mig.SendTarget:
                # After Commit the target is the connection's link (the resent requests follow it).
                link = self.target if self.target is not None else self.link
                if link is not None:
                    link.send(action.envelope)
            elif kind is mig.DeliverToClient:
                self.send_to_client(action.body)
            elif kind is mig.ConnectTarget:
                self.target, self._target_task = self._open_link(self._target_server, self._target_connected)
            elif kind is mig.PauseClient:
                self.held = True
            elif kind is mig.ResumeClient:
                self.held = False
            elif kind is mig.UnknownOutcome:
                self.send_to_client(UNKNOWN_OUTCOME_BODY)
            elif kind is mig.Commit:
                self._commit(action)
            elif kind is mig.CloseTarget:
                self._close_target()
            elif kind is mig.CloseSource:
                pass  # done in _commit: the old link is closed once Release is written
            elif kind is mig.Finished:
                self._finished(action)
        machine = self.migration
        if machine is not None and machine.phase is not self.migration_phase:
            self.migration_phase = machine.phase
            if self.migration_timer is not None:
                self.migration_timer.cancel()
            timeout = self.runtime.pools[self.conn.pool.name].settings.migration_timeout_s
            self.migration_timer = self.listener.loop.call_later(timeout, self._phase_timeout)

    def _close_target(self) -> None:
        """Give up on the migration target: cancel its connect, close its link."""
        if self._target_task is not None:
            self._target_task.cancel()
            self._target_task = None
        if self.target is not None:
            self.target.close()
            self.target = None

    def _target_connected(self, task: asyncio.Task[Any]) -> None:
        if task is not self._target_task:
            return
        self._target_task = None
        if task.cancelled():
            self._migration_event(mig.TargetFailed("cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            self._target_server_failed(describe_error(exc) or "error")
            self._migration_event(mig.TargetFailed(describe_error(exc) or "error"))
            return
        if self.migration is None or self.target is None:
            task.result()[0].close()
            return
        self._migration_event(mig.TargetConnected())

    def _target_server_failed(self, reason: str) -> None:
        server = self._target_server
        if server is not None:
            self.conn.pool.observe_health(server.name, False, f"connect: {reason}")

    def _commit(self, action: mig.Commit) -> None:
        # A restore the source was doing no longer matters: the target gets every unapplied request.
        self.restoring_from = None
        target = self._flip_route()
        self.epoch = action.epoch
        machine = self.migration
        assert machine is not None
        self.expected = dict(machine.expected)
        self.attached = True
        if self.acks is not None:
            self.acks.rebase(action.next_seq)  # the target is acknowledged what it applies, nothing before
        if action.next_seq != machine.next_seq:
            # The source applied requests after the pre-copy attach: tell the target where seq stands.
            target.send(
                Attach(self.sid, action.epoch, {}, action.next_seq, self.acks is not None, client=self.client_address)
            )

    @property
    def client_address(self) -> tuple[str, int]:
        """The client's address as every ``attach`` carries it (after the listener's PROXY header)."""
        return (self.conn.client_ip, self.conn.client_port)

    def _finished(self, action: mig.Finished) -> None:
        if self.migration_timer is not None:
            self.migration_timer.cancel()
            self.migration_timer = None
        self.migration = None
        self.migration_phase = None
        source = self.source
        self.source = None
        if source is not None and source is not self.link:
            source.close()  # committed: its Release is written first, and close() flushes it
        target_server = self._target_server
        if target_server is not None:  # not committed: give back the target's slot
            self.conn.pool.release(target_server, 0, 0)
            self._target_server = None
        self._close_target()
        self.migrations += 1
        self.progressed = not self.inflight
        report = action.report.as_dict()
        report.update(outcome=action.outcome, cause=action.cause, conn_id=self.conn.id, sid=self.sid)
        self.runtime.migration_finished(report, self.listener.name)
        done = self.migration_done
        self.migration_done = None
        if done is not None and not done.done():
            done.set_result(report)
        if action.outcome == "aborted" and not self.closed:
            # Neither backend can carry the session any more (or the client left): end the connection.
            self._fail_inflight()
            self._client_error("server_error", f"migration aborted: {action.cause}")
            return
        if not self.closed:
            self._release_held()

    # -- the connection machine's actions --------------------------------------------------------

    def apply(self, actions: list[Any]) -> None:
        for action in actions:
            kind = type(action)
            if kind is ConnectUpstream:
                self._connect(action)
            elif kind is StartRelay:
                self._attach_link()
            elif kind is Close:
                self._close(action)

    def _close(self, action: Close) -> None:
        if self.closed:
            return
        self.closed = True
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        if self.migration is not None:
            self._migration_event(mig.ClientGone())
        if self.migration_timer is not None:
            self.migration_timer.cancel()
            self.migration_timer = None
        if self.conn.state is not ConnState.CLOSED:
            self.conn.handle(TimedOut(action.status))  # mark the machine closed with our status
            self.conn.status = action.status
        self.transport.close()
        for link in (self.link, self.target):
            if link is not None:
                link.close()
        sid = self.sid
        runtime = self.runtime
        if sid is not None and runtime.sessions.get(sid) is self:
            del runtime.sessions[sid]
        if self.acks is not None:
            runtime.ack_clients.discard(self)
        done = self.migration_done
        if done is not None and not done.done():
            done.set_result({"outcome": "aborted", "cause": action.status, "conn_id": self.conn.id})
        self.listener.connection_done(self, action)  # type: ignore[arg-type]

    def abort(self) -> None:
        self.transport.abort()
        for link in (self.link, self.target):
            if link is not None and link.transport is not None:
                link.transport.abort()

    # -- introspection ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "session": self.sid,
            "epoch": self.epoch,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "inflight": len(self.inflight),
            "buffered_frames": len(self.pending),
            "migrating": self.migration is not None,
            "migrations": self.migrations,
        }


def _op_of(body: bytes) -> Any:
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:  # not msgpack: no op, so not idempotent
        return None
    return msg.get("op") if type(msg) is dict else None
