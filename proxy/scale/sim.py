"""A trace-driven fleet simulator: replay a load series through a scaling policy and count the cost.

The fleet serves ``capacity`` units of load per step per ready server.  A provisioned server is ready
``provision_delay_s`` after the end of the step in which it was ordered; a drained server stops
serving at once and is billed until the policy stops it (the shipped core stops it the next step,
once it reports no connection: migration is assumed to finish within a step).  Every server is
billed from the moment it is ordered until it is stopped, as cloud machines are.

Policies:

- ``CorePolicy`` drives ``proxy.scale.core.ScalingCore``, the class the proxy runs, with whatever
  forecast the caller supplies for each step (the learner's, or the future itself for a bound);
- ``ReactivePolicy`` is Kubernetes' HPA algorithm at step granularity:
  ``desired = ceil(current * utilization / target)``, a 10% tolerance, scale-up at once and scale-down
  to the largest recommendation of the last ``stabilization_s`` (300 s by default);
- ``PerfectPolicy`` knows the future loads and the delay: it orders servers exactly ``delay`` ahead
  and releases them as soon as none is needed before a new one could be ready.

Scored per step (from ``score_from``): an under-provisioned step is one whose load exceeds the ready
capacity; unserved load is the excess; server-minutes count every billed server; an action is a
scale-out or scale-in decision (whatever its size); a reversal is an action in the opposite direction
of the previous one within ``reversal_window_s``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from proxy.scale.core import (
    Action,
    Drain,
    ForecastView,
    Observation,
    Phase,
    Provision,
    ScaleSettings,
    ScalingCore,
    ServerView,
    Stop,
)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    capacity: float  # load one ready server serves per step
    provision_delay_s: float
    step_s: float = 60.0
    initial_servers: int = 1
    reversal_window_s: float = 600.0


class Fleet:
    """The simulated servers: ready, provisioning (with the step they become ready at) and draining."""

    def __init__(self, initial: int) -> None:
        self.ready: list[str] = [f"s{i}" for i in range(initial)]
        self.provisioning: dict[str, int] = {}
        self.draining: list[str] = []
        self._next = initial

    def new_name(self) -> str:
        self._next += 1
        return f"s{self._next - 1}"

    @property
    def billed(self) -> int:
        return len(self.ready) + len(self.provisioning) + len(self.draining)


class Policy(Protocol):
    name: str

    def decide(self, t: int, now: float, load: float, fleet: Fleet) -> list[Action]: ...

    def provisioned(self, duration_s: float, ok: bool) -> None: ...


@dataclass
class SimResult:
    policy: str
    steps: int
    under_provisioned_minutes: float
    unserved_load: float
    unserved_share: float
    server_minutes: float
    actions: int
    scale_outs: int
    scale_ins: int
    reversals: int
    peak_servers: int
    reactive_share: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def simulate(loads: Sequence[float], spec: FleetSpec, policy: Policy, *, score_from: int = 0) -> SimResult:
    """Replay ``loads`` (one value per step) through ``policy``; score steps from ``score_from`` on."""
    fleet = Fleet(spec.initial_servers)
    delay_steps = max(0, math.ceil(spec.provision_delay_s / spec.step_s - 1e-9))
    cap = spec.capacity
    under = 0
    unserved = total = 0.0
    billed = 0
    actions = outs = ins = reversals = peak = 0
    last_dir = 0
    last_ts = -math.inf
    for t, load in enumerate(loads):
        due = [name for name, at in fleet.provisioning.items() if at <= t]
        for name in due:
            del fleet.provisioning[name]
            fleet.ready.append(name)
            policy.provisioned(spec.provision_delay_s, True)
        scored = t >= score_from
        capacity = len(fleet.ready) * cap
        if scored:
            total += load
            if load > capacity + 1e-9:
                under += 1
                unserved += load - capacity
            billed += fleet.billed
            peak = max(peak, fleet.billed)
        now = (t + 1) * spec.step_s
        for action in policy.decide(t, now, load, fleet):
            direction = 0
            if isinstance(action, Provision) and action.count > 0:
                for _ in range(action.count):
                    fleet.provisioning[fleet.new_name()] = t + 1 + delay_steps
                direction = 1
            elif isinstance(action, Drain) and action.names:
                for name in action.names:
                    fleet.ready.remove(name)
                    fleet.draining.append(name)
                direction = -1
            elif isinstance(action, Stop):
                fleet.draining = [n for n in fleet.draining if n not in action.names]
            if direction and scored:
                actions += 1
                outs += direction > 0
                ins += direction < 0
                if last_dir and direction != last_dir and now - last_ts <= spec.reversal_window_s:
                    reversals += 1
            if direction:
                last_dir, last_ts = direction, now
    minutes = spec.step_s / 60.0
    steps = max(0, len(loads) - score_from)
    return SimResult(
        policy=policy.name,
        steps=steps,
        under_provisioned_minutes=under * minutes,
        unserved_load=unserved,
        unserved_share=unserved / total if total else 0.0,
        server_minutes=billed * minutes,
        actions=actions,
        scale_outs=outs,
        scale_ins=ins,
        reversals=reversals,
        peak_servers=peak,
    )


# -- policies --------------------------------------------------------------------------------------


class CorePolicy:
    """The shipped scaler: ``ScalingCore`` fed the fleet and ``forecast_at(t)`` after every step."""

    def __init__(
        self,
        settings: ScaleSettings,
        forecast_at: Callable[[int], ForecastView | None],
        name: str = "predictive",
    ) -> None:
        self.name = name
        self.core = ScalingCore(settings)
        self.forecast_at = forecast_at

    def provisioned(self, duration_s: float, ok: bool) -> None:
        self.core.provisioned(duration_s, ok)

    def decide(self, t: int, now: float, load: float, fleet: Fleet) -> list[Action]:
        per = load / len(fleet.ready) if fleet.ready else 0.0
        servers = tuple(
            [ServerView(n, Phase.READY, per, 1) for n in fleet.ready]
            + [ServerView(n, Phase.PROVISIONING) for n in fleet.provisioning]
            + [ServerView(n, Phase.DRAINING) for n in fleet.draining]
        )
        return self.core.step(Observation(now, servers, self.forecast_at(t), load))


class ReactivePolicy:
    """Kubernetes HPA's rule at step granularity (the baseline a predictive scaler must beat)."""

    def __init__(
        self,
        capacity: float,
        target_utilization: float,
        *,
        stabilization_s: float = 300.0,
        tolerance: float = 0.1,
        min_servers: int = 1,
        max_servers: int = 1000,
        name: str = "reactive",
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.target = target_utilization
        self.stabilization_s = stabilization_s
        self.tolerance = tolerance
        self.min_servers = min_servers
        self.max_servers = max_servers
        self._recs: deque[tuple[float, int]] = deque()

    def provisioned(self, duration_s: float, ok: bool) -> None:
        pass

    def decide(self, t: int, now: float, load: float, fleet: Fleet) -> list[Action]:
        out: list[Action] = []
        if fleet.draining:
            out.append(Stop(tuple(fleet.draining), "drained"))
        current = len(fleet.ready) + len(fleet.provisioning)
        ready = len(fleet.ready)
        if ready:
            ratio = (load / (ready * self.capacity)) / self.target
            desired = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(ready * ratio - 1e-9)
        else:
            desired = math.ceil(load / (self.capacity * self.target) - 1e-9)
        desired = min(self.max_servers, max(self.min_servers, desired))
        self._recs.append((now, desired))
        while self._recs and self._recs[0][0] <= now - self.stabilization_s:
            self._recs.popleft()
        if desired < current:
            desired = max(r for _, r in self._recs)
        if desired > current:
            out.append(Provision(desired - current, "hpa scale-up"))
        elif desired < current and not fleet.provisioning:
            out.append(Drain(tuple(fleet.ready[: current - desired]), "hpa scale-down"))
        return out


class PerfectPolicy:
    """Perfect foresight: the fleet each step is exactly ``ceil(load / capacity)`` (the bound)."""

    def __init__(self, loads: Sequence[float], spec: FleetSpec, min_servers: int = 1, name: str = "perfect"):
        self.name = name
        self.needed = [max(min_servers, math.ceil(y / spec.capacity - 1e-9)) for y in loads]
        self.delay = max(0, math.ceil(spec.provision_delay_s / spec.step_s - 1e-9))
        self.min_servers = min_servers

    def provisioned(self, duration_s: float, ok: bool) -> None:
        pass

    def decide(self, t: int, now: float, load: float, fleet: Fleet) -> list[Action]:
        out: list[Action] = []
        if fleet.draining:
            out.append(Stop(tuple(fleet.draining), "drained"))
        n = len(self.needed)
        last = min(n - 1, t + 1 + self.delay)
        if t + 1 >= n:
            return out
        ready = len(fleet.ready)
        slack = []
        for k in range(t + 1, last + 1):
            avail = ready + sum(1 for at in fleet.provisioning.values() if at <= k)
            slack.append(avail - self.needed[k])
        drain = max(0, min(min(slack), ready - self.min_servers))
        if drain:
            out.append(Drain(tuple(fleet.ready[:drain]), "not needed before a new server could be ready"))
        short = -slack[-1] if last == t + 1 + self.delay else 0
        if short > 0:
            out.append(Provision(short, "needed when it becomes ready"))
        return out
