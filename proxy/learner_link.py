"""The proxy's side of the learner process: per-tick snapshots out, scores and forecasts back.

Learning must never slow the data plane (DESIGN §6), so:

- the learner is a separate process (``python -m model.learner``), started and supervised here: if it
  dies it is restarted with exponential backoff; a configuration reload does not restart it unless the
  metrics settings changed;
- once per tick the proxy packs a compact snapshot (msgpack; per-connection counters as packed int64
  arrays) and writes it to the learner's stdin without awaiting; if the pipe already holds more than
  ``MAX_PENDING_BYTES`` the snapshot is dropped and counted, never queued without bound;
- the learner answers with its latest scores and forecast on stdout; the admin API serves the cached
  copy.

Wire format on both pipes: 4-byte big-endian length, then one msgpack map.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import time
from array import array
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from proxy.runtime import Runtime

MAX_PENDING_BYTES = 4 * 1024 * 1024
MAX_REPLY_BYTES = 16 * 1024 * 1024
_LEN = struct.Struct("!I")


def build_snapshot(runtime: Runtime, now_s: float) -> dict[str, Any]:
    """Cumulative counters of every listener, server and open connection at ``now_s``.

    Cumulative (not per-tick) values make a dropped snapshot harmless: the learner differences
    consecutive snapshots it did receive.
    """
    listeners: dict[str, list[int]] = {}
    conn_ids = array("q")
    c_bytes_in = array("q")
    c_bytes_out = array("q")
    c_msgs_in = array("q")
    c_msgs_out = array("q")
    c_started = array("d")
    for name, listener in runtime.listeners.items():
        s = listener.stats
        live_in = live_out = live_msgs = 0
        for client in listener.connections.values():
            conn_ids.append(client.conn.id)
            b_in, b_out = client.nbytes, client.bytes_out
            m_in, m_out = client.nreads, client.reads_out
            c_bytes_in.append(b_in)
            c_bytes_out.append(b_out)
            c_msgs_in.append(m_in)
            c_msgs_out.append(m_out)
            c_started.append(client.conn.started_s)
            live_in += b_in
            live_out += b_out
            live_msgs += m_in
        closed = sum(s.closed_total.values())
        errors = sum(v for k, v in s.closed_total.items() if k not in ("client_closed", "server_closed"))
        listeners[name] = [
            s.accepted_total,
            closed,
            len(listener.connections),
            s.bytes_in_total + live_in,
            s.bytes_out_total + live_out,
            s.rejected_total,
            errors,
            s.msgs_in_total + live_msgs,
        ]
    servers: dict[str, list[int]] = {}
    for pool in runtime.pools.values():
        for server in pool.state.servers.values():
            if server.retired:
                continue
            servers[f"{pool.name}/{server.name}"] = [
                pool.state.active(server),
                server.conns_total,
                server.connect_failures_total,
                0 if server.health.up else 1,
            ]
    return {
        "ts": now_s,
        "listeners": listeners,
        "servers": servers,
        "conns": {
            "id": conn_ids.tobytes(),
            "bytes_in": c_bytes_in.tobytes(),
            "bytes_out": c_bytes_out.tobytes(),
            "msgs_in": c_msgs_in.tobytes(),
            "msgs_out": c_msgs_out.tobytes(),
            "started": c_started.tobytes(),
        },
        "ended": runtime.drain_ended_connections(),
    }


def _unpin() -> None:
    """In the learner child: drop CPU affinity inherited from a pinned proxy, so that learning never
    competes with the data plane for its core."""
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except (AttributeError, OSError):
        pass


class LearnerLink:
    """Owns the learner process: start, feed, read back, restart."""

    def __init__(self, runtime: Runtime, settings: Any) -> None:
        self.runtime = runtime
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.sent_total = 0
        self.dropped_total = 0
        self.restarts_total = 0
        self.latest: dict[str, Any] = {}
        self.replies_total = 0
        self.stopping = False
        self._reply = asyncio.Event()

    async def wait_reply(self) -> dict[str, Any]:
        """Wait for the learner's next reply (after the next snapshot it processed)."""
        self._reply.clear()
        await self._reply.wait()
        return self.latest

    def command(self) -> list[str]:
        s = self.settings
        r = s.retention
        return [
            sys.executable, "-m", "model.learner",
            "--db", s.db_path,
            "--interval-s", str(s.interval_s),
            "--time-zone", s.time_zone,
            "--lateness-s", str(s.lateness_s),
            "--retention", f"{r.raw_days},{r.minute_days},{r.hour_days},{r.day_days},{r.session_days}",
            "--tick-s", str(self.runtime.config.global_.tick_s),
            "--max-scored-connections", str(s.max_scored_connections),
            *([] if s.models else ["--no-models"]),
        ]

    async def run(self) -> None:
        """Keep a learner process running until cancelled."""
        backoff_s = 0.5
        while not self.stopping:
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.command(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    preexec_fn=_unpin,
                )
            except OSError as exc:
                self.runtime.log.error("learner_start_failed", error=str(exc))
            else:
                self.runtime.log.info("learner_started", pid=self.proc.pid)
                # A baseline at once: the learner counts from its first snapshot (what happened before
                # it is a collection gap, stored as no rows rather than guessed).
                self.send(build_snapshot(self.runtime, time.time()))
                try:
                    await self._read_replies(self.proc)
                    code = await self.proc.wait()
                finally:
                    if self.proc.returncode is None:
                        self.proc.kill()
                        with contextlib.suppress(ProcessLookupError):
                            await self.proc.wait()
                if self.stopping:
                    return
                self.runtime.log.warning("learner_exited", returncode=code)
            self.proc = None
            self.restarts_total += 1
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 30.0)

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                head = await proc.stdout.readexactly(4)
                (length,) = _LEN.unpack(head)
                if length > MAX_REPLY_BYTES:
                    self.runtime.log.error("learner_reply_too_large", length=length)
                    return
                body = await proc.stdout.readexactly(length)
            except asyncio.IncompleteReadError:
                return
            try:
                reply = msgpack.unpackb(body, raw=False)
            except (ValueError, msgpack.UnpackException):
                self.runtime.log.error("learner_reply_invalid")
                return
            if isinstance(reply, dict):
                self.latest = reply
                self.replies_total += 1
                self._reply.set()

    def send(self, snapshot: dict[str, Any]) -> None:
        """Hand one snapshot to the learner, or drop it if the learner is behind or absent."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            self.dropped_total += 1
            return
        transport = proc.stdin.transport
        if transport.get_write_buffer_size() > MAX_PENDING_BYTES:  # type: ignore[attr-defined]
            self.dropped_total += 1
            return
        body = msgpack.packb(snapshot, use_bin_type=True)
        proc.stdin.write(_LEN.pack(len(body)) + body)
        self.sent_total += 1

    async def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: the learner finishes its last rollup and exits
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
