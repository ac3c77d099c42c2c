"""The scaler's I/O shell: runs ``ScalingCore`` and carries out its actions through a provisioner.

The proxy runtime owns one ``Scaler`` per scaled pool, inside ``async with scaler:`` (the scaler's
task group owns every provisioning and migration task; leaving the block cancels them and waits).
Each forecast step (a minute by default) it calls ``tick`` with the per-server load of the last
step and the learner's forecast; each runtime tick (a second) it calls ``pump_migrations`` so that
connections move at ``migrations_per_s``, not in a burst.  The runtime implements ``Fleet``: the pool
operations the scaler needs.  ``status()`` is ``GET /scaling``; ``scale_servers`` is ``POST /scale``.

Provisioning durations are measured here, from ``start`` being called to the server accepting
connections, and fed to the core: that is the lead time it plans with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from proxy.logs import Logger
from proxy.scale.core import (
    Action,
    ConnectionView,
    Drain,
    ForecastView,
    Migrate,
    MigrationBudget,
    MigrationOrder,
    Observation,
    Phase,
    Provision,
    ScaleSettings,
    ScalingCore,
    ServerView,
    Stop,
    plan_migrations,
)
from proxy.scale.provisioners.base import Provisioner, ProvisionError


class Fleet(Protocol):
    """The pool operations the scaler needs; the runtime implements them over ``PoolState``."""

    def add_server(self, name: str, address: str) -> None:
        """Add a READY server to the pool (placement starts sending it new connections)."""

    def set_draining(self, name: str) -> None:
        """Set the server to DRAIN: no new connections, existing ones stay until moved or closed."""

    def remove_server(self, name: str) -> None:
        """Forget the server (after the provisioner stopped it)."""

    def connections(self) -> Iterable[ConnectionView]:
        """The pool's live connections, with their placement key and predicted rate."""

    def place(self, key: int) -> str | None:
        """Where placement puts ``key`` now (draining servers excluded)."""

    async def migrate(self, conn_id: int | str, target: str) -> bool:
        """Move one live connection; False when it was deferred or rolled back."""


class Scaler:
    """One pool's scaler: the core's decisions, carried out."""

    def __init__(
        self,
        settings: ScaleSettings,
        provisioner: Provisioner,
        fleet: Fleet,
        *,
        clock: Callable[[], float] = time.monotonic,
        name_prefix: str = "scale-",
        provision_timeout_s: float = 600.0,
        logger: Logger | None = None,
    ) -> None:
        self.core = ScalingCore(settings)
        self.settings = settings
        self.provisioner = provisioner
        self.fleet = fleet
        self.clock = clock
        self.name_prefix = name_prefix
        self.provision_timeout_s = provision_timeout_s
        self.logger = logger
        self.phases: dict[str, Phase] = {}
        self._seq = 0
        self._onto: set[str] = set()
        self._off: set[str] = set()
        self._budget = MigrationBudget(settings.migrations_per_s, clock())
        self._tg: asyncio.TaskGroup | None = None
        self._provisioning: set[asyncio.Task[None]] = set()
        self._migrating: set[asyncio.Task[None]] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._plan: list[MigrationOrder] = []  # lightest first: pop() takes the heaviest
        self._plan_key: tuple[frozenset[str], frozenset[str]] | None = None
        self._inflight: set[int | str] = set()
        self.migrations_total = 0
        self.migrations_failed_total = 0
        self.last_actions: list[Action] = []

    async def __aenter__(self) -> Scaler:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        tg, self._tg = self._tg, None
        assert tg is not None
        # Shutting down: provisioning (a cancelled start leaves nothing running) and migrations (a
        # cancelled one rolls back to its source) are abandoned; stops finish, under the
        # provisioner's own stop deadline, so no server is left half-stopped.
        for task in self._provisioning | self._migrating:
            task.cancel()
        await tg.__aexit__(*exc)

    def _log(self, level: str, event: str, **fields: Any) -> None:
        if self.logger is not None:
            self.logger.log(level, event, **fields)

    def adopt(self, name: str) -> None:
        """Count an already running pool server as the scaler's (it may then be drained and stopped)."""
        self.phases[name] = Phase.READY

    # -- per step --------------------------------------------------------------------------------

    def observation(
        self,
        now: float,
        loads: Mapping[str, float],
        connections: Mapping[str, int] | None = None,
        forecast: Any = None,
        health: Mapping[str, float] | None = None,
    ) -> Observation:
        conns = connections or {}
        servers = tuple(
            ServerView(
                name,
                phase,
                float(loads.get(name, 0.0)) if phase is not Phase.PROVISIONING else 0.0,
                int(conns.get(name, 0)),
                None if health is None else health.get(name),
            )
            for name, phase in self.phases.items()
        )
        fc = None
        if isinstance(forecast, ForecastView):
            fc = forecast
        elif forecast is not None:
            fc = ForecastView.of(forecast)
        return Observation(now, servers, fc, sum(float(v) for v in loads.values()))

    async def tick(
        self,
        loads: Mapping[str, float],
        connections: Mapping[str, int] | None = None,
        forecast: Any = None,
        health: Mapping[str, float] | None = None,
    ) -> list[Action]:
        """One forecast step: decide, then start what the decision says.  Returns the actions."""
        obs = self.observation(self.clock(), loads, connections, forecast, health)
        recorded = self.core.decisions_total
        actions = self.core.step(obs)
        new = self.core.decisions_total - recorded
        for decision in self.core.decisions[max(0, len(self.core.decisions) - new) :] if new else ():
            fields = decision.to_json()
            fields["clock_s"] = fields.pop("ts")  # the log line's own ts is wall-clock time
            self._log("info", "scaling_decided", **fields)
        for action in actions:
            await self._execute(action)
        self.last_actions = actions
        return actions

    async def _execute(self, action: Action) -> None:
        if isinstance(action, Provision):
            for _ in range(action.count):
                self._seq += 1
                name = f"{self.name_prefix}{self._seq}"
                self.phases[name] = Phase.PROVISIONING
                task = self._group().create_task(self._provision(name), name=f"provision {name}")
                self._provisioning.add(task)
                task.add_done_callback(self._provisioning.discard)
            self._log("info", "scale_out_ordered", servers=action.count, reason=action.reason)
        elif isinstance(action, Drain):
            for name in action.names:
                self.phases[name] = Phase.DRAINING
                self.fleet.set_draining(name)
            self._log("info", "scale_in_ordered", server_names=list(action.names), reason=action.reason)
        elif isinstance(action, Migrate):
            self._onto.update(action.onto)
            self._off.update(action.off)
        elif isinstance(action, Stop):
            for name in action.names:
                self._off.discard(name)
                self.phases.pop(name, None)
                task = self._group().create_task(self._stop(name), name=f"stop {name}")
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)

    def _group(self) -> asyncio.TaskGroup:
        if self._tg is None:
            raise RuntimeError("use the scaler inside 'async with scaler:'")
        return self._tg

    async def _provision(self, name: str) -> None:
        started = self.clock()
        try:
            async with asyncio.timeout(self.provision_timeout_s):
                address = await self.provisioner.start(name)
        except (ProvisionError, TimeoutError) as exc:
            self.core.provisioned(self.clock() - started, ok=False)
            self.phases.pop(name, None)
            self._log("warning", "provision_failed", server=name, error=str(exc) or "timed out")
            return
        self.core.provisioned(self.clock() - started, ok=True)
        if self.phases.get(name) is not Phase.PROVISIONING:  # stopped meanwhile
            await self.provisioner.stop(name)
            return
        self.fleet.add_server(name, address)
        self.phases[name] = Phase.READY
        self._log(
            "info", "server_provisioned", server=name, address=address, duration_s=self.clock() - started
        )

    async def _stop(self, name: str) -> None:
        try:
            await self.provisioner.stop(name)
        except ProvisionError as exc:
            self._log("warning", "server_stop_failed", server=name, error=str(exc))
        self.fleet.remove_server(name)

    # -- migrations ------------------------------------------------------------------------------

    async def pump_migrations(self) -> int:
        """Start the migrations the budget allows now; returns how many were started.

        The plan (every connection to move, heaviest first) is computed once per membership change and
        consumed at ``migrations_per_s``, so a pump per second costs a pass over the connections only
        when servers come or go; connections whose migration is in flight are never planned twice.
        """
        if not self._onto and not self._off:
            return 0
        key = (frozenset(self._onto), frozenset(self._off))
        if key != self._plan_key or not self._plan:
            self._plan_key = key
            self._plan = [
                o
                for o in plan_migrations(
                    self.fleet.connections(), self.fleet.place, onto=self._onto, off=self._off, limit=1 << 62
                )
                if o.conn_id not in self._inflight
            ]
            self._plan.reverse()  # pop() from the end takes the heaviest first
            if not self._plan:
                if not self._inflight:
                    self._onto.clear()  # the new servers hold what hashing gives them
                return 0
        granted = self._budget.take(self.clock(), len(self._plan))
        for _ in range(granted):
            order = self._plan.pop()
            self._inflight.add(order.conn_id)
            task = self._group().create_task(self._migrate(order.conn_id, order.target))
            self._migrating.add(task)
            task.add_done_callback(self._migrating.discard)
        return granted

    async def wait_provisioned(self) -> None:
        """Wait until every provisioning in flight has succeeded or failed."""
        while self._provisioning:
            await asyncio.wait(set(self._provisioning))

    async def wait_idle(self) -> None:
        """Wait until every provisioning, migration and stop in flight has finished."""
        while pending := self._provisioning | self._migrating | self._stopping:
            await asyncio.wait(pending)

    async def _migrate(self, conn_id: int | str, target: str) -> None:
        try:
            ok = await self.fleet.migrate(conn_id, target)
        except Exception as exc:  # one connection's failure must not stop the scaler
            self._log("warning", "migration_failed", conn_id=conn_id, target=target, error=repr(exc))
            ok = False
        finally:
            self._inflight.discard(conn_id)
        self.migrations_total += 1
        self.migrations_failed_total += not ok

    # -- operator API ----------------------------------------------------------------------------

    async def scale_servers(self, target_capacity: int | None) -> dict[str, Any]:
        """``POST /scale``: hold the fleet at ``target_capacity`` servers (None resumes automatic scaling)."""
        target = self.core.request_capacity(target_capacity)
        return {"target_capacity": target, "servers": len(self.phases)}

    def status(self) -> dict[str, Any]:
        """``GET /scaling``: the core's status plus the servers and migrations in flight."""
        out = self.core.status()
        out["managed_servers"] = {name: phase.value for name, phase in self.phases.items()}
        out["migrations"] = {
            "onto": sorted(self._onto),
            "off": sorted(self._off),
            "total": self.migrations_total,
            "failed_total": self.migrations_failed_total,
        }
        return out
