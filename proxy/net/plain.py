"""The ``plain`` backend dialect behind a ``frames`` listener: unmodified servers, recorded frames.

Theory of operation
-------------------
The client side is the envelope dialect's (:class:`proxy.net.frames.FramesClient`): the same framing,
the same first frame naming the session (``session_field``, tokens, takeover), the same placement by
session id.  What differs is the backend side: the server gets a plain TCP connection carrying the
client's frames unchanged (same framing both ways), and every server frame goes back to the client
unchanged.  No envelope, no sequence numbers, no state deltas: the server knows nothing of the proxy.

To move such a session the proxy rebuilds it by itself (docs/plain.md, ``replay/plain.py``):

- every client frame forwarded to the server is shown to the session's :class:`replay.plain.Recorder`,
  which records the frames the pool's ``plain_rules`` classify into partitions and says how many
  server frames the frame produces; the connection counts the replies still outstanding (each server
  frame takes one off, the first ``plain_greeting_frames`` of a connection excepted);
- recorded partitions are written to the partition store as they change (``{seq: frame bytes}``, plus
  ``"overflowed": true``), so a client reconnecting to its session, on this proxy or after a restart,
  gets them replayed to its new server before its own frames (the replies swallowed);
- a migration (``Runtime.migrate_connection``) runs :class:`replay.plain.PlainMigration`: pause the
  client at a frame boundary, wait for the outstanding replies, connect the target, swallow its
  greeting, replay the recorded frames of ``requires(target) ∩ present(session)`` one at a time
  (swallowing their replies), commit, release the held frames.  The machine's deadline is a
  ``loop.call_at`` that feeds it a ``Tick``;
- a server that dies is replaced the same way, as a migration whose source is already lost: the
  replies it owed become ``unknown_outcome`` error frames (nothing is resent: which frames they
  answered is not known).

Bounded memory: client frames held during a migration are bounded by ``max_buffered_bytes`` (then the
client is not read), recorded partitions by their rules' ``max_frames``/``max_bytes``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from proxy.net.frames import MAX_ENVELOPE_BYTES, UNKNOWN_OUTCOME_BODY, BackendLink, FramesClient
from replay import plain
from replay.frames import FrameDecoder, FrameError
from replay.store.base import StoreError

if TYPE_CHECKING:
    from proxy.core.pool import ServerState
    from proxy.net.listener import Listener

__all__ = ["PlainClient", "PlainLink"]


class PlainLink(BackendLink):
    """One proxy-to-server connection in the plain dialect: the client's framing, frames unchanged."""

    __slots__ = ("greeting_left",)

    def __init__(self, owner: FramesClient, server: ServerState) -> None:
        super().__init__(owner, server)
        settings = owner.listener.settings
        self.decoder = FrameDecoder(
            header_bytes=settings.frame_header_bytes,
            byteorder=settings.frame_byteorder,
            max_frame_bytes=MAX_ENVELOPE_BYTES,
        )
        # Frames the server sends by itself when the connection opens (not replies).
        self.greeting_left = owner.greeting_frames if isinstance(owner, PlainClient) else 0

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        owner = self.owner
        try:
            frames = self.decoder.feed(data)
        except FrameError as exc:
            owner.link_failed(self, f"bad frame from server: {exc}")
            return
        for body in frames:
            if self.closed:
                return
            owner.server_frame(self, body)  # type: ignore[attr-defined]

    def send_body(self, body: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(self.owner.header_of(len(body)) + body)


class PlainClient(FramesClient):
    """Client half of a ``frames`` connection whose pool speaks the plain dialect."""

    link_class = PlainLink
    compiled_path = False  # frames are recorded and forwarded raw (_forward), not wrapped in envelopes

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener)
        pool_settings = listener.pool().settings
        self.rules: plain.RuleSet = pool_settings.plain_ruleset()
        self.greeting_frames: int = pool_settings.plain_greeting_frames
        self.recorder = plain.Recorder(self.rules)
        self.outstanding = 0  # server frames the current server still owes the client
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.store_errors = 0
        self.stored: dict[str, dict[Any, Any]] = {}  # partition -> what the store holds of it
        self.versions: dict[str, int] = {}  # partition -> its version in the store
        # Replay of stored partitions to the first server of a reconnecting session.
        self.restore_queue: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self.restore_replies = 0
        self.restore_timer: asyncio.TimerHandle | None = None

    # -- client frames ---------------------------------------------------------------------------

    def _hold(self, body: bytes) -> None:
        if self.migration is not None:
            self._migration_event(plain.ClientFrame(body))  # the machine holds it (and bounds it)
        else:
            super()._hold(body)

    def _forward(self, body: bytes) -> None:
        link: PlainLink = self.link  # type: ignore[assignment]
        partition, replies = self.recorder.observe(body)
        if partition is not None:
            self._persist()
        self.outstanding += replies
        link.server.frames_total += 1
        link.send_body(body)

    def _persist(self) -> None:
        """Write the recorded partitions that changed to the partition store (docs/plain.md).

        After the first write of a partition only the difference goes to the store (a delta: the new
        or replaced frames, the evicted ones), so a long ``log`` partition costs one frame per frame."""
        store = self.runtime.store
        sid = self.sid
        for name in self.recorder.take_changed():
            new = self.recorder.partition_state(name)
            old = self.stored.get(name)
            try:
                if old is None:
                    self.versions[name] = store.set_partition_data(sid, name, new)
                else:
                    set_ = {k: v for k, v in new.items() if old.get(k) is not v and old.get(k) != v}
                    delete = [k for k in old if k not in new]
                    if not set_ and not delete:
                        continue
                    try:
                        self.versions[name] = store.apply_delta(sid, name, self.versions[name] + 1, set_, delete)
                    except StoreError:
                        # Written by someone else meanwhile (the admin API): replace it whole.
                        self.versions[name] = store.set_partition_data(sid, name, new)
            except StoreError as exc:
                # The connection goes on (the recorder still holds the frames for a migration); only a
                # client reconnecting later would miss them.
                self.stored.pop(name, None)
                self.store_errors += 1
                self.runtime.log.warning("plain_store_error", conn_id=self.conn.id, sid=sid, partition=name, detail=str(exc))
                continue
            self.stored[name] = new

    def _maybe_finished(self) -> None:
        if (
            self.client_eof
            and not self.outstanding
            and not self.pending
            and self.migration is None
            and self.restoring_from is None
            and not self.closed
        ):
            from proxy.core.connection import Close

            self.apply([Close("client_closed")])

    def _fail_inflight(self) -> None:
        for _ in range(self.outstanding):
            self.send_to_client(UNKNOWN_OUTCOME_BODY)
        self.outstanding = 0

    # -- the first server ------------------------------------------------------------------------

    def _attach_link(self) -> None:
        """Connected to the first server: replay what the session recorded earlier, then relay."""
        link = self.link
        assert link is not None and self.sid is not None
        self.attached = True
        self._load_recorded()
        frames = self.recorder.frames_for(self._replayable(link.server.requires))
        if not frames:
            self.held = False
            self._release_held()
            return
        self.restore_queue = collections.deque(frames)
        self.restoring_from = 0  # the connection is busy: no migration until the replay is over
        timeout = self.runtime.pools[self.conn.pool.name].settings.migration_timeout_s
        self.restore_timer = self.listener.loop.call_later(timeout, self._restore_timeout)
        self._restore_next()

    def _replayable(self, requires: tuple[str, ...]) -> list[str]:
        """``requires`` without the partitions that lost frames to an overflow (logged): a session that
        must be rebuilt (a reconnect, a dead server) gets what is intact rather than nothing."""
        lost = self.recorder.overflowed() & set(requires)
        if lost:
            self.runtime.log.warning(
                "plain_partition_overflowed", conn_id=self.conn.id, sid=self.sid, partitions=sorted(lost)
            )
        return [name for name in requires if name not in lost]

    def _load_recorded(self) -> None:
        store = self.runtime.store
        sid = self.sid
        state = {}
        for name in store.get_partition_list(sid):
            ps = store.get_partition_data(sid, name)
            if ps is not None:
                state[name] = ps.data
                self.stored[name] = dict(ps.data)
                self.versions[name] = ps.version
        if state:
            dropped = self.recorder.load(state)
            if dropped:
                self.runtime.log.info("plain_frames_dropped", conn_id=self.conn.id, sid=sid, dropped=dropped)
            self._persist()  # what the current rules reclassified

    def _restore_next(self) -> None:
        link: PlainLink = self.link  # type: ignore[assignment]
        if link.greeting_left:
            return  # the greeting comes first; it is the client's, as on any new connection
        while self.restore_queue:
            _, body, replies = self.restore_queue.popleft()
            link.send_body(body)
            if replies:
                self.restore_replies = replies
                return
        self._restore_done()

    def _restore_done(self) -> None:
        if self.restore_timer is not None:
            self.restore_timer.cancel()
            self.restore_timer = None
        self.restoring_from = None
        self.held = False
        self._release_held()

    def _restore_timeout(self) -> None:
        self.restore_timer = None
        if self.restoring_from is not None and not self.closed:
            self._client_error("server_error", "the server did not answer the replay of the session's recorded frames in time")

    # -- server frames ---------------------------------------------------------------------------

    def server_frame(self, link: PlainLink, body: bytes) -> None:
        if self.migration is not None:
            if link is self.target:
                self._migration_event(plain.TargetReply(body))
                return
            if link is self.source:
                if link.greeting_left:  # still its own greeting: the client's, not a reply
                    link.greeting_left -= 1
                    self.send_to_client(body)
                    return
                self._migration_event(plain.SourceReply(body))
                return
        if link is not self.link:
            return  # a link being closed: nothing it says matters any more
        if link.greeting_left:
            link.greeting_left -= 1
            self.send_to_client(body)
            if self.restoring_from is not None and not link.greeting_left:
                self._restore_next()
            return
        if self.restoring_from is not None:
            if self.restore_replies:
                self.restore_replies -= 1  # the reply to a replayed frame: swallowed
                if not self.restore_replies:
                    self._restore_next()
                return
            return  # a frame nobody asked for during the replay: not the client's either
        if self.outstanding:
            self.outstanding -= 1
        self.progressed = True
        self.send_to_client(body)
        if self.client_eof:
            self._maybe_finished()

    # -- migration -------------------------------------------------------------------------------

    def start_migration(self, target: ServerState, *, source_lost: str | None = None) -> asyncio.Future[dict[str, Any]]:
        loop = self.listener.loop
        done: asyncio.Future[dict[str, Any]] = loop.create_future()
        link = self.link
        assert link is not None and self.sid is not None
        if self.restoring_from is not None:
            # The server died replaying the session: the migration replays it to the next one.
            if self.restore_timer is not None:
                self.restore_timer.cancel()
                self.restore_timer = None
            self.restore_queue.clear()
            self.restore_replies = 0
            self.restoring_from = None
        timeout = self.runtime.pools[self.conn.pool.name].settings.migration_timeout_s
        now = loop.time()
        machine = plain.PlainMigration(
            source=link.server.name,
            target=target.name,
            recorder=self.recorder,
            # A live source keeps the session when a required partition overflowed (deferred); a
            # dead one leaves nothing to keep, so the rebuild replays what is intact.
            target_requires=target.requires if source_lost is None else self._replayable(target.requires),
            outstanding=self.outstanding,
            now_s=now,
            quiesce_timeout_s=timeout,
            replay_timeout_s=timeout,
            greeting_frames=self.greeting_frames,
            max_buffered_bytes=self.max_buffered,
        )
        self.migration = machine  # type: ignore[assignment]
        self._begin_migration(target, done)
        actions = machine.start()
        if not machine.done:
            # Frames already waiting here (reading paused) are the machine's to hold from now on.
            while self.pending:
                body = self.pending.popleft()
                actions += machine.handle(plain.ClientFrame(body), now)
            self.pending_bytes = 0
            if source_lost is not None:
                actions += machine.handle(plain.SourceFailed(source_lost), loop.time())
        self._run_plain_actions(actions)
        return done

    def _migration_event(self, event: Any) -> None:
        machine = self.migration
        if machine is None:
            return
        self._run_plain_actions(machine.handle(event, self.listener.loop.time()))  # type: ignore[arg-type]

    def _tick(self) -> None:
        self.deadline_timer = None
        self._migration_event(plain.Tick())

    def _run_plain_actions(self, actions: list[Any]) -> None:
        machine: plain.PlainMigration = self.migration  # type: ignore[assignment]
        if machine is not None and machine.done:
            # The machine's count is the shell's again: 0 on the target after a commit (every reply to
            # a replayed frame was swallowed), what the source still owes after a rollback.
            self.outstanding = 0 if machine.phase is plain.Phase.COMMITTED else machine.outstanding
        for action in actions:
            kind = type(action)
            if kind is plain.DeliverToClient:
                self.send_to_client(action.body)
            elif kind is plain.SendTarget:
                if self.target is not None:
                    self.target.send_body(action.body)  # type: ignore[attr-defined]
            elif kind is plain.ConnectTarget:
                assert self._target_server is not None
                self.target, self._target_task = self._open_link(self._target_server, self._target_connected)
            elif kind is plain.PauseClient:
                self.held = True
            elif kind is plain.StopReadingClient:
                self.reading_paused = True
                self.sync_reading()
            elif kind is plain.ResumeClient:
                self.held = False
                self.reading_paused = False
                self.sync_reading()
            elif kind is plain.RepliesLost:
                for _ in range(action.count):
                    self.send_to_client(UNKNOWN_OUTCOME_BODY)
            elif kind is plain.Commit:
                self._plain_commit()
            elif kind is plain.ReleaseClientFrames:
                for body in action.frames:
                    if self.closed or self.link is None or self.link.closed:
                        break
                    self._forward(body)
            elif kind is plain.CloseTarget:
                self._close_target()
            elif kind is plain.CloseSource:
                pass  # done in _finished, once the route has flipped
            elif kind is plain.Finished:
                self._finished(action)  # type: ignore[arg-type]
        machine = self.migration  # type: ignore[assignment]
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        if machine is not None and not machine.done and machine.deadline_s is not None:
            self.deadline_timer = self.listener.loop.call_at(machine.deadline_s, self._tick)

    def _plain_commit(self) -> None:
        target = self._flip_route()
        target.greeting_left = 0  # type: ignore[attr-defined]  # the machine swallowed it

    def _finished(self, action: Any) -> None:
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        super()._finished(action)
        # A plain migration resends nothing, so moving the connection again cannot starve a request.
        self.progressed = True

    def _close(self, action: Any) -> None:
        for timer in (self.deadline_timer, self.restore_timer):
            if timer is not None:
                timer.cancel()
        self.deadline_timer = self.restore_timer = None
        super()._close(action)

    # -- introspection ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        machine = self.migration
        out.update(
            dialect="plain",
            inflight=self.outstanding,
            buffered_frames=len(self.pending) + (len(machine.buffered) if machine is not None else 0),  # type: ignore[attr-defined]
            recorded_frames=self.recorder.frames_per_partition(),
            overflowed=sorted(self.recorder.overflowed()),
        )
        return out
