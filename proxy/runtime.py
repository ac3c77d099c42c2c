"""The proxy process: listeners, pools, health checks, the admin API, reload and drain.

Structured concurrency: :meth:`Runtime.run` owns one ``asyncio.TaskGroup``; every background task
(tick, health checks, admin-triggered reloads) is created in it and ends with it.  Connect tasks are
owned by their listener.  Readiness is an ``Event``; nothing polls.

Lifecycle::

    run() -> bind listeners and admin -> READY -> (SIGHUP | POST /reload)* -> SIGTERM | POST /drain
          -> readiness fails -> listeners close -> connections finish or hit drain_timeout_s -> exit
    a second SIGTERM/SIGINT during the drain stops at once (connections are aborted).

Reload is one path for SIGHUP and ``POST /reload``: load -> validate -> diff -> apply.  Everything that
can fail (binding new sockets) happens before anything changes, so an invalid or unbindable
configuration keeps the old one in full and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from proxy import __version__
from proxy.conf import ConfigInvalid, load_config, parse_hostport
from proxy.core.metrics import Sample
from proxy.core.migrations import MigrationStats
from proxy.core.pool import AdminState, PoolState, ServerSpec
from proxy.logs import AccessLog, Logger, iso_utc
from proxy.net.health import run_checks
from proxy.net.listener import Listener, describe_connection
from replay.acks import CommitRounds


@dataclass
class PoolRuntime:
    name: str
    settings: Any  # proxy.conf.Pool
    state: PoolState
    check_task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    errors: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": list(self.errors), "changes": list(self.changes)}


def pool_settings_rate(settings: Any) -> float:
    return float(settings.migrations_per_s)


def server_spec(
    pool_settings: Any, name: str, address: str, requires: Any = None, state: str = "ready"
) -> ServerSpec:
    """One server of a pool as ``PoolState`` takes it; ``requires`` None inherits the pool's."""
    host, port = parse_hostport(address)
    requires = requires if requires is not None else pool_settings.requires
    return ServerSpec(name, host, port, tuple(requires), AdminState(state))


def server_specs(pool_settings: Any) -> list[ServerSpec]:
    return [server_spec(pool_settings, s.name, s.address, s.requires, s.state) for s in pool_settings.servers]


def _make_pool(settings: Any) -> PoolRuntime:
    hc = settings.health_check
    state = PoolState(
        settings.name,
        server_specs(settings),
        balance=settings.balance,
        balance_factor=settings.hash_balance_factor,
        rise=hc.rise,
        fall=hc.fall,
    )
    return PoolRuntime(settings.name, settings, state)


@dataclass
class _Counters:
    reloads_ok: int = 0
    reloads_failed: int = 0
    last_reload_ok: bool = True
    last_reload_errors: list[str] = field(default_factory=list)


class UsageEvents:
    """The daily usage job's events: logged, and the latest of each kept for ``/stats``."""

    def __init__(self, log: Logger) -> None:
        self.log = log
        self.last: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()

    def info(self, event: str, **fields: Any) -> None:
        self.log.info(event, **fields)
        self._keep(event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log.error(event, **fields)
        self._keep(event, fields)

    def _keep(self, event: str, fields: dict[str, Any]) -> None:
        self.last[event] = {"ts": time.time(), **fields}
        self.changed.set()


class Runtime:
    def __init__(self, config: Any, *, log: Logger | None = None, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path if config_path is not None else getattr(config, "source", None)
        g = config.global_
        self.log = log if log is not None else Logger.to_file(g.log_level, g.log_file)
        self.access_log = AccessLog(g.access_log)
        self.water_marks = (g.high_water_bytes, g.low_water_bytes)
        self.pools: dict[str, PoolRuntime] = {p.name: _make_pool(p) for p in config.pools}
        self.listeners: dict[str, Listener] = {}
        self.retired_listeners: set[Listener] = set()
        self.started_s = time.time()
        self.ready = False
        self.draining = False
        self.counters = _Counters()
        self._ready_event = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._drained_event = asyncio.Event()
        self._no_connections = asyncio.Event()
        self._no_connections_waiters = 0
        self._health_event = asyncio.Event()
        self._hard_stop = False
        self._tg: asyncio.TaskGroup | None = None
        self._reload_lock = asyncio.Lock()
        self.admin: Any = None
        self.learner: Any = None  # proxy.learner_link.LearnerLink when metrics are on
        self._learner_task: asyncio.Task[None] | None = None
        self._usage_task: asyncio.Task[None] | None = None
        self._usage_stop = asyncio.Event()
        self.usage_events = UsageEvents(self.log)
        self._ended: list[list[Any]] = []
        self.store: Any = None  # replay.store PartitionStore: the store section's, or memory for frames
        self.sessions: dict[str, Any] = {}  # session id -> proxy.net.frames.FramesClient holding it
        # Envelope acks (pools with send_acks): the group-commit rounds the store has made durable, and
        # the connections told about them after every commit.
        self.commit_rounds = CommitRounds()
        self.ack_clients: set[Any] = set()  # proxy.net.frames.FramesClient
        self.migrations = MigrationStats()
        self._series_store: Any = None
        self.ended_dropped_total = 0
        self.scaling: Any = None  # proxy.scale.live.LiveScaler when the scale section is present
        self._scaling_task: asyncio.Task[None] | None = None

    # -- public API ------------------------------------------------------------------------------

    async def wait_ready(self) -> None:
        await self._ready_event.wait()

    def request_stop(self, hard: bool = False) -> None:
        """Graceful drain; a second request (or ``hard``) stops at once."""
        if self._stop_event.is_set() or hard:
            self._hard_stop = True
            self.log.warning("stop_forced")
            for listener in self.all_listeners():
                listener.close_all("shutdown", hard=True)
            self._drained_event.set()
        self._stop_event.set()

    def listener_address(self, name: str) -> tuple[str, int]:
        bound = self.listeners[name].bound
        assert bound is not None
        return bound

    async def run(self, *, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._open_store()
                await self._bind_all()
                for pool in self.pools.values():
                    self._start_checks(pool)
                self._start_learner()
                self._start_usage()
                self._start_scaling()
                tick = tg.create_task(self._tick_loop(), name="tick")
                if install_signals:
                    self._install_signals(loop)
                self.ready = True
                self._ready_event.set()
                self.log.info(
                    "proxy_started",
                    version=__version__,
                    listeners={n: f"{x.bound[0]}:{x.bound[1]}" for n, x in self.listeners.items() if x.bound},
                    admin=self.admin.url if self.admin is not None else None,
                )
                await self._stop_event.wait()
                await self._drain()
                tick.cancel()
                await self._stop_scaling()
                await self._stop_learner()
                await self._stop_usage()
                for pool in self.pools.values():
                    if pool.check_task is not None:
                        pool.check_task.cancel()
                for listener in self.all_listeners():
                    listener.cancel_connects()
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    with contextlib.suppress(Exception):
                        loop.remove_signal_handler(sig)
            if self.admin is not None:
                await self.admin.stop()
            self.access_log.close()
            if self.store is not None:
                self.store.close()
                self.store = None
            if self._series_store is not None:
                self._series_store.close()
                self._series_store = None
            self.log.info("proxy_stopped")

    async def reload(self, config: Any | None = None) -> ReloadResult:
        """Load (unless given) -> validate -> diff -> apply.  The old config stays on any failure."""
        async with self._reload_lock:
            if config is None:
                if self.config_path is None:
                    return self._reload_failed(["no configuration file to reload from"])
                try:
                    config = await asyncio.to_thread(load_config, self.config_path)
                except ConfigInvalid as exc:
                    return self._reload_failed([str(e) for e in exc.errors])
                except OSError as exc:
                    return self._reload_failed([f"{self.config_path}: {exc.strerror or exc}"])
            try:
                changes = await self._apply(config)
            except OSError as exc:
                return self._reload_failed([f"cannot bind: {exc.strerror or exc}"])
            self.counters.reloads_ok += 1
            self.counters.last_reload_ok = True
            self.counters.last_reload_errors = []
            self.log.info("config_reloaded", changes=changes)
            return ReloadResult(True, (), tuple(changes))

    def add_pool_server(self, pool: str, name: str, address: str) -> None:
        """Add a READY server to ``pool`` at run time (the scaler), as a reload adds one: it takes the
        pool's ``requires``.  KeyError for an unknown pool, ValueError for a taken name or bad address."""
        runtime_pool = self.pools[pool]
        runtime_pool.state.add_server(server_spec(runtime_pool.settings, name, address))
        self.log.info("server_added", pool=pool, server=name, address=address)

    def remove_pool_server(self, pool: str, name: str) -> bool:
        """Remove a server added with ``add_pool_server``, as a reload removes one: it leaves placement
        at once and is forgotten when its last connection ends."""
        removed = self.pools[pool].state.remove_server(name)
        if removed:
            self.log.info("server_removed", pool=pool, server=name)
        return removed

    async def scale_servers(self, target_capacity: int | None) -> dict[str, Any]:
        """``POST /scale``: hold the scaled pool at ``target_capacity`` servers (None resumes automatic
        scaling); decides at once.  LookupError without a scale section, RuntimeError when stopped."""
        if self.scaling is None:
            raise LookupError("scaling is off: add a scale section to the configuration")
        return await self.scaling.scale_servers(target_capacity)

    def scaling_status(self) -> dict[str, Any] | None:
        """``GET /scaling``; None without a scale section."""
        return None if self.scaling is None else self.scaling.status()

    def set_server_state(self, pool: str, server: str, state: str) -> bool:
        """Operator admin-state change.  KeyError for an unknown pool or server, ValueError for a bad state."""
        admin_state = AdminState(state)
        changed = self.pools[pool].state.set_admin_state(server, admin_state)
        if changed:
            self.log.info("server_state_changed", pool=pool, server=server, state=state)
        return changed

    def connections_changed(self) -> None:
        """Called by a listener when its last connection ended."""
        if self.total_connections() == 0:
            self._no_connections.set()
            if self.draining:
                self._drained_event.set()

    @property
    def watching_connections(self) -> bool:
        """True while someone waits for the last connection to end (drain, or wait_no_connections)."""
        return self.draining or self._no_connections_waiters > 0

    async def wait_no_connections(self) -> None:
        """Wait until no client connection is open (connections already closed count as gone)."""
        if self.total_connections() == 0:
            return
        self._no_connections.clear()
        self._no_connections_waiters += 1
        try:
            await self._no_connections.wait()
        finally:
            self._no_connections_waiters -= 1

    # Ended connections are reported to the learner once per tick; bounded so that a flood of short
    # connections cannot grow memory between ticks.
    MAX_ENDED_PER_TICK = 50_000

    def connection_ended(
        self, listener: str, conn: Any, now_s: float, status: str, bytes_in: int, bytes_out: int
    ) -> None:
        if self.learner is None:
            return
        if len(self._ended) >= self.MAX_ENDED_PER_TICK:
            self.ended_dropped_total += 1
            return
        server = conn.server
        self._ended.append(
            [
                conn.id,
                conn.started_s,
                now_s,
                status,
                bytes_in,
                bytes_out,
                listener,
                None if server is None else f"{conn.pool.name}/{server.name}",
            ]
        )

    def drain_ended_connections(self) -> list[list[Any]]:
        ended, self._ended = self._ended, []
        return ended

    def total_connections(self) -> int:
        return sum(len(listener.connections) for listener in self.all_listeners())

    # -- views for the admin API -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        now = time.time()
        listeners = {}
        for name, listener in self.listeners.items():
            live_in = live_out = 0
            for client in listener.connections.values():
                live_in += client.nbytes
                live_out += client.bytes_out
            s = listener.stats
            listeners[name] = {
                "bind": listener.settings.bind,
                "bound": None if listener.bound is None else f"{listener.bound[0]}:{listener.bound[1]}",
                "mode": listener.settings.mode,
                "pool": listener.settings.pool,
                "active_connections": len(listener.connections),
                "accepted_total": s.accepted_total,
                "rejected_total": s.rejected_total,
                "closed_total": dict(s.closed_total),
                "bytes_in_total": s.bytes_in_total + live_in,
                "bytes_out_total": s.bytes_out_total + live_out,
            }
        return {
            "version": __version__,
            "uptime_s": round(now - self.started_s, 3),
            "ready": self.ready,
            "draining": self.draining,
            "connections": self.total_connections(),
            "listeners": listeners,
            "pools": {name: self.describe_pool(name) for name in self.pools},
            "reloads": {
                "success_total": self.counters.reloads_ok,
                "failure_total": self.counters.reloads_failed,
                "last_ok": self.counters.last_reload_ok,
                "last_errors": self.counters.last_reload_errors,
            },
            "usage": self.usage_events.last if self._usage_task is not None else None,
            "migrations": self.migrations.as_dict(),
            "sessions": len(self.sessions),
        }

    def describe_pool(self, name: str) -> dict[str, Any]:
        pool = self.pools[name]
        state = pool.state
        live: dict[int, tuple[int, int]] = {}
        for listener in self.all_listeners():
            for client in listener.connections.values():
                server = client.conn.server
                if server is not None and client.conn.pool is state:
                    a, b = live.get(id(server), (0, 0))
                    live[id(server)] = (a + client.nbytes, b + client.bytes_out)
        servers = []
        for server in state.servers.values():
            if server.retired:
                continue
            extra_in, extra_out = live.get(id(server), (0, 0))
            servers.append(
                {
                    "name": server.name,
                    "address": server.address,
                    "state": server.admin.value,
                    "health": server.health.state.value,
                    "eligible": server.eligible,
                    "requires": list(server.requires),
                    "active_connections": state.active(server),
                    "connections_total": server.conns_total,
                    "connect_failures_total": server.connect_failures_total,
                    "check_failures_total": server.health.failures_total,
                    "last_error": server.health.last_error,
                    "bytes_in_total": server.bytes_in_total + extra_in,
                    "bytes_out_total": server.bytes_out_total + extra_out,
                    "frames_total": server.frames_total,
                    "acks_total": server.acks_total,
                }
            )
        return {
            "name": name,
            "balance": state.balance,
            "hash_balance_factor": state.balance_factor,
            "eligible_servers": sum(1 for s in state.servers.values() if s.eligible),
            "servers": servers,
        }

    def connections(self, limit: int | None = None) -> list[dict[str, Any]]:
        now = time.time()
        out: list[dict[str, Any]] = []
        for listener in self.all_listeners():
            remaining = None if limit is None else limit - len(out)
            if remaining is not None and remaining <= 0:
                break
            out.extend(listener.snapshot(now, remaining))
        return out

    def find_client(self, conn_id: int) -> tuple[Listener, Any] | None:
        for listener in self.all_listeners():
            client = listener.connections.get(conn_id)
            if client is not None:
                return listener, client
        return None

    async def migrate_connection(self, conn_id: int, target: str) -> dict[str, Any]:
        """Move a live ``frames`` connection to server ``target`` of its pool; the migration's report.

        The connection runs its dialect's migration (``start_migration`` of ``proxy.net.frames`` or
        ``proxy.net.plain``); both report in the same format, counted by :meth:`migration_finished`.

        Raises ``LookupError`` (no such connection or server) or ``ValueError`` (not a frames
        connection, or the target cannot take it).  A migration that cannot start now (rate limit,
        connection busy) is reported as ``deferred`` with its reason, not raised.
        """
        found = self.find_client(conn_id)
        if found is None:
            raise LookupError(f"no connection {conn_id}")
        listener, client = found
        if listener.settings.mode != "frames":
            raise ValueError(f"connection {conn_id} is on a {listener.settings.mode} listener; only frames connections migrate")
        pool = client.conn.pool
        server = pool.servers.get(target)
        if server is None:
            raise LookupError(f"pool {pool.name} has no server {target!r}")
        if not server.eligible:
            raise ValueError(f"server {target} is not ready and up (admin {server.admin.value}, health {server.health.state.value})")
        report = {"outcome": "deferred", "conn_id": conn_id, "sid": client.sid, "target": target}
        current = client.link.server.name if client.link is not None else None
        reason = None
        if client.closed:
            reason = "closing"
        elif current == target:
            reason = "already_there"
        elif client.migration is not None:
            reason = "migrating"
        elif not client.attached or client.restoring_from is not None or not client.progressed:
            # Not bound yet, restoring a partition, or no reply since its last move: moving it again
            # now could starve its requests (each move resends them), so it waits for one answer.
            reason = "busy"
        elif not self.migrations.allow(target, pool_settings_rate(self.pools[pool.name].settings), time.monotonic()):
            reason = "rate_limited"
        if reason is not None:
            report.update(cause=reason, source=current)
            self.migrations.deferred(report)
            return report
        return await client.start_migration(server)

    def migration_finished(self, report: dict[str, Any], listener: str) -> None:
        self.migrations.finished(report)
        if self.access_log.enabled:
            now = time.time()
            self.access_log.add({"ts": iso_utc(now), "kind": "migration", "listener": listener, **report})
        if report["outcome"] != "committed":
            self.log.info("migration_not_committed", **report)

    def connection(self, conn_id: int) -> dict[str, Any] | None:
        found = self.find_client(conn_id)
        return None if found is None else describe_connection(found[0].name, found[1], time.time())

    def query_series(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """``GET /series`` (called in a worker thread): read the learner's store, read-only use."""
        from model.tsdb import SeriesStore, read_settings, series_response

        settings = self.config.metrics
        found = read_settings(settings.db_path)
        if found is None:
            return 404, {"error": "not_found", "message": "the metrics store has no data yet"}
        if self._series_store is None:
            interval_s, time_zone = found
            self._series_store = SeriesStore(
                settings.db_path, interval_s=interval_s, time_zone=time_zone, lateness_s=settings.lateness_s
            )
        return series_response(self._series_store, params)

    def metric_samples(self) -> Iterator[Sample]:
        yield "ferryman_build_info", {"version": __version__}, 1
        yield "ferryman_process_start_time_seconds", {}, self.started_s
        yield "ferryman_ready", {}, 1 if self.ready else 0
        yield "ferryman_config_reloads_total", {"result": "success"}, self.counters.reloads_ok
        yield "ferryman_config_reloads_total", {"result": "failure"}, self.counters.reloads_failed
        yield "ferryman_config_last_reload_success", {}, 1 if self.counters.last_reload_ok else 0
        stats = self.stats()
        for name, ls in stats["listeners"].items():
            lab = {"listener": name}
            yield "ferryman_listener_connections_total", lab, ls["accepted_total"]
            yield "ferryman_listener_rejected_connections_total", lab, ls["rejected_total"]
            yield "ferryman_listener_active_connections", lab, ls["active_connections"]
            yield "ferryman_listener_received_bytes_total", lab, ls["bytes_in_total"]
            yield "ferryman_listener_sent_bytes_total", lab, ls["bytes_out_total"]
            for status, count in sorted(ls["closed_total"].items()):
                yield "ferryman_listener_closed_connections_total", {"listener": name, "status": status}, count
        for pname, ps in stats["pools"].items():
            yield "ferryman_pool_eligible_servers", {"pool": pname}, ps["eligible_servers"]
            yield "ferryman_pool_servers", {"pool": pname}, len(ps["servers"])
            for s in ps["servers"]:
                lab = {"pool": pname, "server": s["name"]}
                yield "ferryman_server_up", lab, 1 if s["health"] == "up" else 0
                for st in AdminState:
                    yield (
                        "ferryman_server_admin_state",
                        {"pool": pname, "server": s["name"], "state": st.value},
                        1 if s["state"] == st.value else 0,
                    )
                yield "ferryman_server_active_connections", lab, s["active_connections"]
                yield "ferryman_server_connections_total", lab, s["connections_total"]
                yield "ferryman_server_connect_failures_total", lab, s["connect_failures_total"]
                yield "ferryman_server_check_failures_total", lab, s["check_failures_total"]
                yield "ferryman_server_sent_bytes_total", lab, s["bytes_in_total"]
                yield "ferryman_server_received_bytes_total", lab, s["bytes_out_total"]
                yield "ferryman_server_frames_total", lab, s["frames_total"]
                yield "ferryman_server_acks_total", lab, s["acks_total"]
        m = self.migrations
        for outcome, count in m.outcomes.items():
            yield "ferryman_migrations_total", {"outcome": outcome}, count
        yield "ferryman_migrations_in_progress", {}, m.in_progress
        yield "ferryman_migration_pause_seconds_sum", {}, m.pause_sum_s
        yield "ferryman_migration_pause_seconds_count", {}, m.pause_count
        yield "ferryman_migration_state_bytes_total", {"phase": "precopy"}, m.precopy_bytes_total
        yield "ferryman_migration_state_bytes_total", {"phase": "replay"}, m.replay_bytes_total
        yield "ferryman_migration_partitions_total", {"kind": "present"}, m.partitions_present_total
        yield "ferryman_migration_partitions_total", {"kind": "replayed"}, m.partitions_replayed_total
        yield "ferryman_migration_unknown_outcomes_total", {}, m.unknown_outcomes_total
        if self.scaling is not None:
            yield from self.scaling.metric_samples()
        if self.learner is not None:
            yield from self._learner_samples(self.learner)

    @staticmethod
    def _learner_samples(link: Any) -> Iterator[Sample]:
        yield "ferryman_learner_up", {}, 1 if link.proc is not None else 0
        yield "ferryman_learner_restarts_total", {}, link.restarts_total
        yield "ferryman_learner_snapshots_sent_total", {}, link.sent_total
        yield "ferryman_learner_snapshots_dropped_total", {}, link.dropped_total
        latest = link.latest
        if "scored_connections" not in latest:
            return  # models off, or no reply yet
        yield "ferryman_learner_scored_connections", {}, latest["scored_connections"]
        forecast = latest.get("forecast") or {}
        yield "ferryman_forecast_beats_naive", {}, 1 if forecast.get("beats_naive") else 0
        step = forecast.get("step_s") or 60.0
        for h, point in enumerate(forecast.get("points") or (), start=1):
            _, lo, mid, hi = point
            for bound, value in (("lo", lo), ("mid", mid), ("hi", hi)):
                # messages per second over the forecast step, so the unit matches the other rates
                yield "ferryman_forecast_messages_per_second", {"horizon_steps": str(h), "bound": bound}, value / step

    # -- internals -------------------------------------------------------------------------------

    def all_listeners(self) -> list[Listener]:
        return [*self.listeners.values(), *self.retired_listeners]

    async def _bind_all(self) -> None:
        for settings in self.config.listeners:
            listener = Listener(self, settings)
            host, port = parse_hostport(settings.bind)
            try:
                await listener.start(host, port)
            except OSError:
                for other in self.listeners.values():
                    other.stop_accepting()
                raise
            self.listeners[settings.name] = listener
        if self.config.admin is not None:
            from proxy.admin.app import AdminServer

            self.admin = AdminServer(self)
            await self.admin.start(self.config.admin.bind)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)

    def _reload_from_signal(self) -> None:
        if self._tg is not None and not self.draining:
            self._tg.create_task(self._log_reload(), name="reload")

    async def _log_reload(self) -> None:
        result = await self.reload()
        if not result.ok:
            self.log.error("config_reload_failed", errors=list(result.errors))

    def _reload_failed(self, errors: list[str]) -> ReloadResult:
        self.counters.reloads_failed += 1
        self.counters.last_reload_ok = False
        self.counters.last_reload_errors = errors
        self.log.warning("config_reload_rejected", errors=errors)
        return ReloadResult(False, tuple(errors))

    def _start_checks(self, pool: PoolRuntime) -> None:
        if pool.check_task is not None:
            pool.check_task.cancel()
            pool.check_task = None
        if pool.settings.health_check.enabled and self._tg is not None:
            pool.check_task = self._tg.create_task(run_checks(pool, self._health_changed), name=f"checks:{pool.name}")

    def _health_changed(self, pool: str, server: str, up: bool, error: str | None) -> None:
        self.log.warning("server_health_changed", pool=pool, server=server, up=up, error=error)
        self._health_event.set()

    async def wait_health_change(self) -> None:
        """Wait for the next server health transition (for operators' tools and tests)."""
        self._health_event.clear()
        await self._health_event.wait()

    async def _tick_loop(self) -> None:
        while True:
            tick_s = self.config.global_.tick_s
            await asyncio.sleep(tick_s)
            for listener in self.all_listeners():
                listener.sweep(tick_s)
            for listener in list(self.retired_listeners):
                if not listener.connections:
                    self.retired_listeners.discard(listener)
            self.access_log.flush()
            if self.store is not None:
                now = time.time()
                touch = self.store.touch
                for sid in self.sessions:
                    touch(sid, now)  # a live session never expires
                self.store.expire(now)
                commit_seq = self.store.commit()  # group commit, once per tick
                durable_round = self.commit_rounds.committed(commit_seq, self.store.durable_seq)
                for client in list(self.ack_clients):
                    client.send_ack(durable_round)
            if self.learner is not None:
                from proxy.learner_link import build_snapshot

                self.learner.send(build_snapshot(self, time.time()))
            if self.scaling is not None:
                try:
                    await self.scaling.pump()
                except Exception as exc:  # the scaler must never stop the housekeeping
                    self.log.error("scale_pump_failed", error=repr(exc))

    def _open_store(self) -> None:
        settings = getattr(self.config, "store", None)
        from replay.store import DurableStore, MemoryStore

        if settings is None:
            if any(x.mode == "frames" for x in self.config.listeners):
                # Session state needs a home even without a store section: memory, lost on restart.
                self.store = MemoryStore(ttl_s=3600.0)
                self.log.info("store_opened", kind="memory", sessions=0)
            return

        if settings.kind == "memory":
            self.store = MemoryStore(ttl_s=settings.ttl_s)
        else:
            self.store = DurableStore(settings.directory, fsync=settings.fsync, ttl_s=settings.ttl_s)
        self.log.info("store_opened", kind=settings.kind, sessions=sum(1 for _ in self.store.sessions()))

    def _start_learner(self) -> None:
        settings = getattr(self.config, "metrics", None)
        if settings is None or self._tg is None:
            return
        from proxy.learner_link import LearnerLink

        self.learner = LearnerLink(self, settings)
        self._learner_task = self._tg.create_task(self.learner.run(), name="learner")

    async def _stop_learner(self) -> None:
        if self.learner is None:
            return
        await self.learner.stop()
        if self._learner_task is not None:
            self._learner_task.cancel()
        self.learner = None

    def _start_usage(self) -> None:
        """The daily usage job, run after every local midnight when ``usage.schedule`` is true."""
        settings = getattr(self.config, "usage", None)
        if settings is None or not settings.schedule or self._tg is None:
            return
        from datetime import UTC, datetime

        from model.usage.options import UsageOptions
        from model.usage.schedule import run_scheduled

        options = UsageOptions.from_config(self.config)
        problems = options.problems()
        if problems:
            self.log.error("usage_schedule_refused", problems=problems)
            return
        self._usage_stop = asyncio.Event()
        job = run_scheduled(options, lambda: datetime.now(UTC), self._usage_stop, log=self.usage_events)
        self._usage_task = self._tg.create_task(job, name="usage")

    def _start_scaling(self) -> None:
        section = getattr(self.config, "scale", None)
        if section is None or self._tg is None:
            return
        from proxy.scale.live import LiveScaler

        self.scaling = LiveScaler(self, section)
        self._scaling_task = self._tg.create_task(self.scaling.run(), name="scaler")

    async def _stop_scaling(self) -> None:
        """Stop deciding; work in flight is cancelled or finished and the servers started are stopped."""
        task, self._scaling_task = self._scaling_task, None
        if task is None:
            return
        self.scaling.stop()
        try:
            await task
        except Exception as exc:
            self.log.error("scale_stop_failed", error=repr(exc))

    async def _stop_usage(self) -> None:
        task, self._usage_task = self._usage_task, None
        if task is None:
            return
        self._usage_stop.set()
        task.cancel()  # a job running in its thread is told to stop at its next block
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _drain(self) -> None:
        self.ready = False
        self.draining = True
        timeout_s = self.config.global_.drain_timeout_s
        self.log.info("drain_started", connections=self.total_connections(), drain_timeout_s=timeout_s)
        for listener in self.all_listeners():
            listener.stop_accepting()
        if self.total_connections() == 0:
            self._drained_event.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained_event.wait()
        except TimeoutError:
            left = self.total_connections()
            self.log.warning("drain_timed_out", connections=left)
            for listener in self.all_listeners():
                listener.close_all("drain_timeout")
        self.access_log.flush()
        self.log.info("drain_finished")

    async def _apply(self, new: Any) -> list[str]:
        """Diff ``new`` against the running config and apply it.  Raises OSError before changing
        anything if a new listener cannot bind."""
        old = self.config
        changes: list[str] = []
        old_listeners = {x.name: x for x in old.listeners}
        new_listeners = {x.name: x for x in new.listeners}
        # 1. Fallible first: bind listeners that are new or moved.
        fresh: dict[str, Listener] = {}
        try:
            for name, settings in new_listeners.items():
                previous = old_listeners.get(name)
                if previous is not None and previous.bind == settings.bind and name in self.listeners:
                    continue
                listener = Listener(self, settings)
                host, port = parse_hostport(settings.bind)
                await listener.start(host, port)
                fresh[name] = listener
        except OSError:
            for listener in fresh.values():
                listener.stop_accepting()
            raise
        # 2. Infallible from here on.
        g_old, g_new = old.global_, new.global_
        if g_old.log_level != g_new.log_level:
            self.log.set_level(g_new.log_level)
            changes.append(f"global.log_level: {g_old.log_level} -> {g_new.log_level}")
        if g_old.access_log != g_new.access_log:
            self.access_log.close()
            self.access_log = AccessLog(g_new.access_log)
            changes.append("global.access_log reopened")
        if (g_old.high_water_bytes, g_old.low_water_bytes) != (g_new.high_water_bytes, g_new.low_water_bytes):
            self.water_marks = (g_new.high_water_bytes, g_new.low_water_bytes)
            changes.append("global water marks (new connections)")
        if g_old.loop != g_new.loop or g_old.log_file != g_new.log_file:
            changes.append("global.loop/log_file: takes effect on restart")
        old_pools = {p.name: p for p in old.pools}
        for settings in new.pools:
            previous = old_pools.get(settings.name)
            runtime_pool = self.pools.get(settings.name)
            if runtime_pool is None or previous is None:
                self.pools[settings.name] = runtime_pool = _make_pool(settings)
                self._start_checks(runtime_pool)
                changes.append(f"pool {settings.name} added")
                continue
            if previous == settings:
                continue
            hc = settings.health_check
            specs = server_specs(settings)
            if self.scaling is not None and self.scaling.fleet.pool == settings.name:
                # The servers the scaler started are not in the file: keep them.
                specs += [server_spec(settings, n, a) for n, a in self.scaling.fleet.added.items()]
            runtime_pool.state.reconfigure(
                specs,
                balance=settings.balance,
                balance_factor=settings.hash_balance_factor,
                rise=hc.rise,
                fall=hc.fall,
            )
            runtime_pool.settings = settings
            if previous.health_check != hc:
                self._start_checks(runtime_pool)
            changes.append(f"pool {settings.name} updated")
        for name in set(old_pools) - {p.name for p in new.pools}:
            runtime_pool = self.pools.pop(name, None)
            if runtime_pool is not None and runtime_pool.check_task is not None:
                runtime_pool.check_task.cancel()
            changes.append(f"pool {name} removed")
        for name, settings in new_listeners.items():
            if name in fresh:
                old_listener = self.listeners.get(name)
                if old_listener is not None:
                    old_listener.stop_accepting()
                    self.retired_listeners.add(old_listener)
                    changes.append(f"listener {name} moved to {settings.bind}")
                else:
                    changes.append(f"listener {name} added on {settings.bind}")
                self.listeners[name] = fresh[name]
            elif old_listeners[name] != settings:
                self.listeners[name].apply_settings(settings)
                changes.append(f"listener {name} updated")
        for name in set(old_listeners) - set(new_listeners):
            listener = self.listeners.pop(name, None)
            if listener is not None:
                listener.stop_accepting()
                self.retired_listeners.add(listener)
            changes.append(f"listener {name} removed")
        if old.admin != new.admin:
            changes.append("admin settings updated")
        if getattr(old, "scale", None) != getattr(new, "scale", None):
            changes.append("scale settings: take effect on restart")
        if getattr(old, "metrics", None) != getattr(new, "metrics", None):
            await self._stop_learner()
            self.config = new
            self._start_learner()
            changes.append("metrics settings updated (learner restarted)")
        if getattr(old, "usage", None) != getattr(new, "usage", None) or (
            new.usage is not None and old.global_.access_log != new.global_.access_log
        ):
            await self._stop_usage()
            self.config = new
            self._start_usage()
            changes.append("usage settings updated (daily job rescheduled)")
        self.config = new
        if self.admin is not None and old.admin is not None and new.admin is not None and old.admin.bind != new.admin.bind:
            await self.admin.rebind(new.admin.bind)
        return changes
