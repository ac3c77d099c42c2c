"""From the proxy's per-tick snapshots to metric rows (pure: no I/O, no clock).

Snapshots carry cumulative counters (see ``proxy.learner_link.build_snapshot``); the collector keeps
the previous snapshot and turns differences into occurrences, levels into states and ended
connections into session records.  A dropped snapshot only makes the next difference span two ticks.
A counter that went backwards (the proxy restarted) is taken as a fresh baseline, never as a
negative count.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

# Snapshot list layouts, in the order build_snapshot writes them.
L_ACCEPTED, L_CLOSED, L_ACTIVE, L_BYTES_IN, L_BYTES_OUT, L_REJECTED, L_ERRORS, L_MSGS_IN = range(8)
S_ACTIVE, S_CONNS, S_CONNECT_FAILURES, S_DOWN = range(4)


def _delta(new: int, old: int | None) -> int:
    if old is None or new < old:
        return 0 if old is None else new
    return new - old


@dataclass
class TickRows:
    ts: float
    values: dict[tuple[str, str], Any]
    sessions: list[tuple[str, str, float, float]]
    conn_ids: array
    conn_msgs: array  # messages (reads) both ways during the tick, per connection
    conn_bytes: array
    conn_started: array
    ended_ids: list[int]
    total_msgs: int


@dataclass
class Collector:
    listeners: dict[str, list[int]] = field(default_factory=dict)
    servers: dict[str, list[int]] = field(default_factory=dict)
    conns: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (msgs, bytes) cumulative

    def ingest(self, snap: dict[str, Any]) -> TickRows:
        ts = float(snap["ts"])
        values: dict[tuple[str, str], Any] = {}
        total_msgs = 0
        for name, now in snap["listeners"].items():
            before = self.listeners.get(name)
            values[("sessions_connected", name)] = now[L_ACTIVE]
            if before is not None:
                values[("sessions_started", name)] = _delta(now[L_ACCEPTED], before[L_ACCEPTED])
                values[("bytes_in", name)] = _delta(now[L_BYTES_IN], before[L_BYTES_IN])
                values[("bytes_out", name)] = _delta(now[L_BYTES_OUT], before[L_BYTES_OUT])
                msgs = _delta(now[L_MSGS_IN], before[L_MSGS_IN])
                values[("frames_in", name)] = msgs
                total_msgs += msgs
                values[("errors", name)] = _delta(now[L_ERRORS], before[L_ERRORS]) + _delta(
                    now[L_REJECTED], before[L_REJECTED]
                )
            self.listeners[name] = list(now)
        failed_by_pool: dict[str, int] = {}
        for key, now in snap["servers"].items():
            pool = key.split("/", 1)[0]
            failed_by_pool[pool] = failed_by_pool.get(pool, 0) + (1 if now[S_DOWN] else 0)
            before = self.servers.get(key)
            if before is not None:
                values[("connection_failures", key)] = _delta(now[S_CONNECT_FAILURES], before[S_CONNECT_FAILURES])
            self.servers[key] = list(now)
        for pool, failed in failed_by_pool.items():
            values[("backends_failed", pool)] = failed
        sessions: list[tuple[str, str, float, float]] = []
        durations: dict[str, list[float]] = {}
        ended_ids: list[int] = []
        for entry in snap.get("ended", ()):
            conn_id, started, ended, _status, _bin, _bout, listener = entry[:7]
            sessions.append((listener, str(conn_id), float(started), float(ended)))
            d = durations.setdefault(listener, [0.0, 0])
            d[0] += ended - started
            d[1] += 1
            ended_ids.append(int(conn_id))
            self.conns.pop(int(conn_id), None)
        for listener, (total, count) in durations.items():
            values[("session_duration_s", listener)] = (total, int(count))
        c = snap["conns"]
        ids = array("q", c["id"])
        b_in, b_out = array("q", c["bytes_in"]), array("q", c["bytes_out"])
        m_in, m_out = array("q", c["msgs_in"]), array("q", c["msgs_out"])
        started = array("d", c["started"])
        conn_msgs = array("q", bytes(8 * len(ids)))
        conn_bytes = array("q", bytes(8 * len(ids)))
        seen = self.conns
        fresh: dict[int, tuple[int, int]] = {}
        for i, conn_id in enumerate(ids):
            msgs = m_in[i] + m_out[i]
            nbytes = b_in[i] + b_out[i]
            prev = seen.get(conn_id)
            if prev is None:
                conn_msgs[i], conn_bytes[i] = msgs, nbytes
            else:
                conn_msgs[i], conn_bytes[i] = max(0, msgs - prev[0]), max(0, nbytes - prev[1])
            fresh[conn_id] = (msgs, nbytes)
        self.conns = fresh
        return TickRows(ts, values, sessions, ids, conn_msgs, conn_bytes, started, ended_ids, total_msgs)
