"""The scaler inside the running proxy: a ``Fleet`` over one pool, and the loops that drive ``Scaler``.

``Runtime`` builds one ``LiveScaler`` when the configuration has a ``scale:`` section and runs it in
its task group:

- every ``step_s`` (a forecast step) ``step`` measures each server's load in the step just ended
  (client frames forwarded to it, ``ServerState.frames_total``, per ``step_s``), its connections and
  their mean health score, reads the learner's latest forecast, and calls ``Scaler.tick``;
- every runtime tick ``pump`` starts the migrations the scaler's budget allows;
- ``POST /scale`` (``scale_servers``) sets or clears the manual target and decides at once, with the
  loads of the last step (a partial step would read as a load spike);
- on shutdown the scaler's work in flight is cancelled or finished (see ``Scaler.__aexit__``) and the
  provisioner stops every server it started.

The pool's configured servers count as the scaler's while their admin state is ``ready`` (an
operator who drains one takes it away from the scaler; setting it ready again gives it back).  A
configured server the scaler scales in is left in the pool in ``drain`` state: the configuration owns
it.  Servers the scaler started are removed from the pool once stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from proxy.core.metrics import Sample
from proxy.core.pool import AdminState, PoolState
from proxy.scale.core import Action, ConnectionView, ForecastView, Phase, action_json
from proxy.scale.driver import Scaler
from proxy.scale.provisioners import ProcessProvisioner, Provisioner, StaticProvisioner

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def make_provisioner(settings: Any) -> Provisioner:
    """The provisioner a ``scale.provisioner`` section describes."""
    if settings.kind == "static":
        return StaticProvisioner(settings.standby, check_connect=settings.check_connect)
    import pathlib

    from proxy.conf.schema import port_range

    return ProcessProvisioner(
        settings.command,
        host=settings.host,
        ports=port_range(settings.ports),
        ready_timeout_s=settings.ready_timeout_s,
        stop_timeout_s=settings.stop_timeout_s,
        log_dir=None if settings.log_dir is None else pathlib.Path(settings.log_dir),
    )


def forecast_view(forecast: Any, step_s: float) -> ForecastView | None:
    """The learner's forecast (``learner.latest["forecast"]``) in the scaler's unit (frames per ``step_s``)."""
    if not isinstance(forecast, dict):
        return None
    points = forecast.get("points")
    fc_step = forecast.get("step_s")
    if not points or not isinstance(fc_step, int | float) or fc_step <= 0:
        return None
    factor = step_s / float(fc_step)
    try:
        scaled = tuple(
            (float(p[0]), float(p[1]) * factor, float(p[2]) * factor, float(p[3]) * factor) for p in points
        )
    except (TypeError, ValueError, IndexError):
        return None
    at = forecast.get("beats_naive_at")
    return ForecastView(
        scaled,
        bool(forecast.get("beats_naive")),
        float(fc_step),
        str(forecast.get("model") or ""),
        tuple(bool(b) for b in at) if isinstance(at, list | tuple) else (),
    )


class PoolFleet:
    """``proxy.scale.driver.Fleet`` over one pool of the runtime."""

    def __init__(self, runtime: Runtime, pool: str) -> None:
        self.runtime = runtime
        self.pool = pool
        self.added: dict[str, str] = {}  # servers the scaler added: name -> host:port
        self._placed: dict[int, str] = {}  # placement key -> server, from the last connections() pass

    @property
    def state(self) -> PoolState:
        return self.runtime.pools[self.pool].state

    def add_server(self, name: str, address: str) -> None:
        try:
            self.runtime.add_pool_server(self.pool, name, address)
        except (KeyError, ValueError) as exc:
            self.runtime.log.error("scale_add_server_failed", pool=self.pool, server=name, error=str(exc))
            return
        self.added[name] = address

    def set_draining(self, name: str) -> None:
        with contextlib.suppress(KeyError):
            self.runtime.set_server_state(self.pool, name, AdminState.DRAIN.value)

    def remove_server(self, name: str) -> None:
        if self.added.pop(name, None) is None:
            return  # a configured server: it stays in the pool, drained
        self.runtime.remove_pool_server(self.pool, name)

    def frames_clients(self) -> list[Any]:
        """The pool's frames connections that are bound to a server."""
        state = self.state
        out = []
        for listener in self.runtime.all_listeners():
            if listener.settings.mode != "frames":
                continue
            for client in listener.connections.values():
                conn = client.conn
                if conn.server is not None and conn.pool is state and client.sid is not None and not client.closed:
                    out.append(client)
        return out

    def connections(self) -> list[ConnectionView]:
        rates = self._scores("predicted_rate")
        out = []
        placed: dict[int, str] = {}
        for client in self.frames_clients():
            conn = client.conn
            placed[conn.key] = conn.server.name
            out.append(ConnectionView(conn.id, conn.key, conn.server.name, rates.get(conn.id, 0.0)))
        self._placed = placed
        return out

    def place(self, key: int) -> str | None:
        """Where ``key`` belongs with the current membership (draining servers are out of it).

        With the consistent balancer this is the hash alone, without the bounded-load cap: the cap
        spreads arrivals, but a plan computed once from the loads of the moment would move every
        connection of a crowded server; the hash moves exactly the keys the new membership gives to
        other servers, and never back.  Other balancers place a connection as if it were not there.
        """
        state = self.state
        if state.balance == "consistent":
            return state.balancer.pick(key, {}, ())
        load: Any = state.load
        own = self._placed.get(key)
        if own is not None and load.get(own, 0) > 0:
            load = dict(load)
            load[own] -= 1
        return state.balancer.pick(key, load, ())

    async def migrate(self, conn_id: int | str, target: str) -> bool:
        try:
            report = await self.runtime.migrate_connection(int(conn_id), target)
        except (LookupError, ValueError):
            return False  # closed meanwhile, or the target left placement
        return report.get("outcome") == "committed"

    def _scores(self, field: str) -> dict[int, float]:
        learner = self.runtime.learner
        if learner is None:
            return {}
        out = {}
        for score in learner.latest.get("scores") or ():
            value = score.get(field)
            if isinstance(value, int | float):
                out[score.get("conn_id")] = float(value)
        return out

    def health_by_server(self) -> dict[str, float]:
        """Mean health score of each server's scored connections."""
        health = self._scores("health")
        if not health:
            return {}
        sums: dict[str, list[float]] = {}
        for client in self.frames_clients():
            value = health.get(client.conn.id)
            if value is not None:
                acc = sums.setdefault(client.conn.server.name, [0.0, 0.0])
                acc[0] += value
                acc[1] += 1
        return {name: total / count for name, (total, count) in sums.items()}


class LiveScaler:
    """One ``scale:`` section, running: the scaler, its provisioner and the pool it acts on."""

    def __init__(self, runtime: Runtime, section: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self.section = section
        self.clock = clock
        self.fleet = PoolFleet(runtime, section.pool)
        self.provisioner = make_provisioner(section.provisioner)
        self.scaler = Scaler(
            section.core_settings(),
            self.provisioner,
            self.fleet,
            clock=clock,
            name_prefix=section.name_prefix,
            provision_timeout_s=section.provision_timeout_s,
            logger=runtime.log,
        )
        # Where forecasts come from: the learner's latest reply by default; a benchmark replaying a
        # compressed trace sets its own (a callable returning a reply's "forecast" dict, or None).
        self.forecast_source: Callable[[], Any] | None = None
        self.running = False
        self.steps_total = 0
        self.last_loads: dict[str, float] = {}
        self._frames: dict[str, int] = {}  # each server's frames_total at the start of the step
        self._step_started = 0.0
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Decide every ``step_s`` until ``stop``; the servers started are stopped on the way out."""
        try:
            async with self.scaler:
                self._reconcile()
                self._frames = self._counters()
                self._step_started = self.clock()
                self.running = True
                self._notify()
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.section.step_s):
                            await self._stop.wait()
                    if self._stop.is_set():
                        break
                    try:
                        await self.step()
                    except Exception as exc:  # one bad step must not stop the scaler, nor the proxy
                        self.runtime.log.error("scale_step_failed", error=repr(exc))
                self.running = False
        except Exception as exc:  # the scaler's own tasks failed: the proxy keeps serving without it
            self.runtime.log.error("scaler_failed", error=repr(exc))
        finally:
            self.running = False
            self._notify()
            await self.provisioner.aclose()

    def stop(self) -> None:
        self._stop.set()

    # -- the two cadences ------------------------------------------------------------------------

    async def step(self, *, measure: bool = True) -> list[Action]:
        """One decision.  ``measure``: close the step (loads since the previous one); otherwise the
        last step's loads are used again (``POST /scale`` between two steps)."""
        async with self._lock:
            if self.section.pool not in self.runtime.pools:
                self.runtime.log.warning("scale_pool_missing", pool=self.section.pool)
                return []  # removed by a reload; the scale section takes effect on restart
            self._reconcile()
            if measure:
                now = self.clock()
                elapsed = max(now - self._step_started, 1e-3)
                counters = self._counters()
                per_step = self.section.step_s / elapsed  # timers drift: loads are per step_s
                self.last_loads = {
                    name: max(0, total - self._frames.get(name, 0)) * per_step for name, total in counters.items()
                }
                self._frames = counters
                self._step_started = now
            state = self.fleet.state
            conns = {name: state.load.get(name, 0) for name in self.scaler.phases}
            forecast = None
            if self.forecast_source is not None:
                forecast = forecast_view(self.forecast_source(), self.section.step_s)
            elif self.runtime.learner is not None:
                forecast = forecast_view(self.runtime.learner.latest.get("forecast"), self.section.step_s)
            health = self.fleet.health_by_server() or None
            actions = await self.scaler.tick(self.last_loads, conns, forecast, health)
            self.steps_total += 1
        self._notify()
        return actions

    async def pump(self) -> int:
        """Start the migrations the budget allows now (called every runtime tick)."""
        if not self.running:
            return 0
        started = await self.scaler.pump_migrations()
        self._notify()
        return started

    # -- operator API ----------------------------------------------------------------------------

    async def scale_servers(self, target_capacity: int | None) -> dict[str, Any]:
        """``POST /scale``: hold the fleet at ``target_capacity`` servers (None resumes) and decide now."""
        if not self.running:
            raise RuntimeError("the scaler is not running")
        out = await self.scaler.scale_servers(target_capacity)
        actions = await self.step(measure=False)
        out["actions"] = [action_json(a) for a in actions]
        out["servers"] = len(self.scaler.phases)
        return out

    def status(self) -> dict[str, Any]:
        """``GET /scaling``."""
        out = self.scaler.status()
        out["pool"] = self.section.pool
        out["running"] = self.running
        out["step_s"] = self.section.step_s
        out["steps_total"] = self.steps_total
        out["loads"] = dict(self.last_loads)
        out["provisioner"] = {"kind": self.provisioner.kind, "running": self.provisioner.running()}
        return out

    def metric_samples(self) -> Iterator[Sample]:
        pool = self.section.pool
        counts = dict.fromkeys((p.value for p in Phase), 0)
        for phase in self.scaler.phases.values():
            counts[phase.value] += 1
        for phase, n in counts.items():
            yield "ferryman_scale_servers", {"pool": pool, "phase": phase}, n
        status = self.scaler.core.status()
        yield "ferryman_scale_desired_servers", {"pool": pool}, status["desired"]["scale_out"]
        yield "ferryman_scale_lead_time_seconds", {"pool": pool}, self.scaler.core.lead_time_s
        failed = self.scaler.migrations_failed_total
        yield "ferryman_scale_migrations_total", {"pool": pool, "result": "committed"}, self.scaler.migrations_total - failed
        yield "ferryman_scale_migrations_total", {"pool": pool, "result": "failed"}, failed
        yield "ferryman_scale_provision_failures_total", {"pool": pool}, status["provision_failures_total"]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checking after every step and migration pump (for
        operators' tools and tests)."""
        while not predicate():
            await self._progress.wait()

    # -- internals -------------------------------------------------------------------------------

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def _counters(self) -> dict[str, int]:
        return {s.name: s.frames_total for s in self.fleet.state.servers.values() if not s.retired}

    def _reconcile(self) -> None:
        """Keep the scaler's view of the configured servers in step with their admin state."""
        phases = self.scaler.phases
        servers = self.fleet.state.servers
        added = self.fleet.added
        for name, server in servers.items():
            if server.retired or name in added:
                continue
            ready = server.admin is AdminState.READY
            phase = phases.get(name)
            if ready and phase is None:
                self.scaler.adopt(name)
            elif not ready and phase is Phase.READY:
                del phases[name]  # an operator took it out of service
        for name, phase in list(phases.items()):
            if phase is not Phase.PROVISIONING and name not in servers and name not in added:
                del phases[name]  # removed by a reload
