"""Predictive scaling: the decision core (sans-IO).

Theory of operation
-------------------
Once per forecast step (a minute by default) the driver hands ``ScalingCore.step`` an ``Observation``:
the clock, every server the scaler manages with its phase and its load in the last step, and the
learner's aggregate forecast (points ``(ts, lo, mid, hi)`` and whether it beats naive).  The core
returns actions (``Provision``, ``Drain``, ``Migrate``, ``Stop``), each with a sentence saying why,
and records the decision for ``GET /scaling``.  It never sleeps, opens sockets or reads the clock:
the same code runs inside the proxy and inside the trace simulator (``proxy.scale.sim``), so the
benchmark measures what the proxy does.

How a step decides
------------------
1. *Lead time*: the 90th percentile of recent provisioning durations (``provisioned`` reports them);
   ``initial_lead_time_s`` until the first one is measured.  A server ordered now serves from
   ``now + lead``; the next decision comes a step later, so the demand to cover is the largest load
   expected over the next ``ceil(lead / step) + 1`` steps.
2. *Demand*: predictive mode takes the forecast's upper band (``hi``) over that horizon, capped at
   ``forecast_cap_factor`` times the largest load seen (a broken model cannot order a fleet).  When the
   forecast is missing, malformed or does not beat naive at that horizon, reactive mode takes the
   last load extrapolated by its recent trend (least squares over ``trend_steps``) over the same time.
3. *Thresholds* (per server, derived from history within configured bounds):

   - upper = ``capacity * target_utilization / imbalance``.  ``imbalance`` is the
     ``imbalance_quantile`` of each ready server's load over the fleet mean, across servers and the
     last ``history_steps`` steps, clamped to ``[1, max_imbalance]``: consistent hashing with bounded
     load does not spread load evenly, and the hottest server is the one that overflows.
   - lower = ``upper * (1 - band)``.  ``band`` is the ``volatility_quantile`` of the relative step-to-step
     change of the aggregate load over the same history, clamped to ``[hysteresis_min, hysteresis_max]``:
     a noisy load gets a wide dead band (no flapping), a smooth one a narrow band (no idle servers).

4. *Scale out* when ``ceil(demand / upper)`` exceeds the servers ready or provisioning, unless within
   ``scale_out_cooldown_s`` of the previous scale-out (doubled after each failed provisioning, up to
   32 times).  *Scale in* when ``ceil(max(demand, load now) / lower)`` stayed below the ready servers
   for the whole ``scale_in_stabilization_s`` (the largest recommendation of the window is used, as
   Kubernetes' HPA does), no server is provisioning, and ``scale_in_cooldown_s`` has passed since any
   scale action.  The least loaded servers are drained (fewest connections to move).
5. Servers that became ready get ``Migrate(onto=...)``: the driver moves the connections consistent
   hashing now places on them, highest predicted usage first (``plan_migrations``), within
   ``migrations_per_s`` (``MigrationBudget``).  Drained servers get ``Migrate(off=...)`` and, once they
   carry no connection or ``drain_timeout_s`` has passed, ``Stop``.

A manual target (``request_capacity``, ``POST /scale``) replaces the demand until cleared and skips
the cooldowns.  In forecast-only mode every decision is recorded with ``acted: false`` and no action
is returned.

Rules
-----
- Counts stay within ``[min_servers, max_servers]``; a fleet outside them is brought back at once.
- Only READY servers are drained, never the last ``min_servers``; nothing is drained while a
  provisioning is in flight (the two would contradict each other).
- ``Stop`` is returned once per drained server.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    """Every knob of the scaler; ``docs/scaling.md`` lists the YAML keys (section ``scale:``)."""

    capacity: float = 1000.0  # load one server takes at its limit, in the forecast's unit (per step)
    step_s: float = 60.0  # the forecast's step; used for the horizon when there is no forecast
    target_utilization: float = 0.7  # the share of capacity a server is sized for (the headroom knob)
    min_servers: int = 1
    max_servers: int = 20
    forecast_only: bool = False
    initial_lead_time_s: float = 120.0  # until a provisioning has been measured
    lead_time_quantile: float = 0.9
    lead_time_samples: int = 20
    forecast_cap_factor: float = 3.0
    band_weight: float = 1.0  # demand = mid + band_weight * (hi - mid): 1 sizes for the upper band
    scale_out_cooldown_s: float = 60.0
    scale_in_cooldown_s: float = 300.0
    scale_in_stabilization_s: float = 600.0
    scale_in_max_fraction: float = 0.5  # of the ready servers, per scale-in (at least one server)
    history_steps: int = 1440
    imbalance_quantile: float = 0.9
    max_imbalance: float = 1.25  # the pool's hash_balance_factor bounds it anyway
    volatility_quantile: float = 0.5
    hysteresis_min: float = 0.05
    hysteresis_max: float = 0.15
    trend_steps: int = 5
    migrations_per_s: float = 50.0
    drain_timeout_s: float = 300.0
    decisions_kept: int = 50

    def errors(self) -> list[str]:
        """Every invalid value, as ``key: message`` lines (empty when valid)."""
        out = []
        if not self.capacity > 0:
            out.append("capacity: must be > 0")
        if not self.step_s > 0:
            out.append("step_s: must be > 0")
        if not 0 < self.target_utilization <= 1:
            out.append("target_utilization: must be in (0, 1]")
        if self.min_servers < 0 or self.max_servers < max(1, self.min_servers):
            out.append("min_servers/max_servers: need 0 <= min_servers <= max_servers, max_servers >= 1")
        for key in ("lead_time_quantile", "imbalance_quantile", "volatility_quantile"):
            if not 0 <= getattr(self, key) <= 1:
                out.append(f"{key}: must be in [0, 1]")
        if not 0 <= self.hysteresis_min <= self.hysteresis_max < 1:
            out.append("hysteresis_min/hysteresis_max: need 0 <= min <= max < 1")
        if not 0 <= self.band_weight <= 1:
            out.append("band_weight: must be in [0, 1]")
        if self.max_imbalance < 1:
            out.append("max_imbalance: must be >= 1")
        if self.forecast_cap_factor < 1:
            out.append("forecast_cap_factor: must be >= 1")
        if not 0 < self.scale_in_max_fraction <= 1:
            out.append("scale_in_max_fraction: must be in (0, 1]")
        for key in (
            "initial_lead_time_s",
            "scale_out_cooldown_s",
            "scale_in_cooldown_s",
            "scale_in_stabilization_s",
            "migrations_per_s",
            "drain_timeout_s",
        ):
            if getattr(self, key) < 0:
                out.append(f"{key}: must be >= 0")
        for key in ("lead_time_samples", "history_steps", "trend_steps", "decisions_kept"):
            if getattr(self, key) < 2:
                out.append(f"{key}: must be >= 2")
        return out


# -- inputs --------------------------------------------------------------------------------------


class Phase(enum.Enum):
    """The scaler's view of a server: PROVISIONING counts as capacity on the way, DRAINING does not."""

    PROVISIONING = "provisioning"
    READY = "ready"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class ServerView:
    """One managed server; ``load`` is its load in the last step, in the forecast's unit."""

    name: str
    phase: Phase
    load: float = 0.0
    connections: int = 0
    health: float | None = None  # mean health score of its connections, when the model has one


@dataclass(frozen=True, slots=True)
class ForecastView:
    """The aggregate forecast as the core needs it (``model.learn.Forecast`` converts with ``of``)."""

    points: tuple[tuple[float, float, float, float], ...]
    beats_naive: bool
    step_s: float
    model: str = ""
    beats_naive_at: tuple[bool, ...] = ()

    @classmethod
    def of(cls, forecast: Any) -> ForecastView:
        """From ``model.learn.Forecast`` (duck-typed: the proxy never imports the learner's models)."""
        return cls(
            points=tuple(tuple(p) for p in forecast.points),  # type: ignore[misc]
            beats_naive=bool(forecast.beats_naive),
            step_s=float(forecast.step_s),
            model=str(getattr(forecast, "model_name", "")),
            beats_naive_at=tuple(bool(b) for b in getattr(forecast, "beats_naive_at", ())),
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """What the driver knows at ``now``; ``load`` defaults to the sum of the servers' loads."""

    now: float
    servers: tuple[ServerView, ...]
    forecast: ForecastView | None = None
    load: float | None = None


# -- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provision:
    """Start ``count`` servers; report each outcome with ``ScalingCore.provisioned``."""

    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class Drain:
    """Set these servers to DRAIN (no new connections) and move their connections off."""

    names: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Migrate:
    """Move connections onto new servers or off draining ones, at most ``budget_per_s`` a second."""

    onto: tuple[str, ...]
    off: tuple[str, ...]
    budget_per_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop these drained servers and forget them."""

    names: tuple[str, ...]
    reason: str


Action = Provision | Drain | Migrate | Stop


def action_json(action: Action) -> dict[str, Any]:
    return {"action": type(action).__name__.lower(), **asdict(action)}


@dataclass(frozen=True, slots=True)
class Decision:
    """One recorded decision: what the scaler saw, what it wanted, what it did and why."""

    ts: float
    mode: str  # predictive | reactive | manual
    current: int  # ready + provisioning
    desired: int
    demand: float
    upper_threshold: float
    lower_threshold: float
    actions: tuple[Action, ...]
    acted: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "mode": self.mode,
            "current": self.current,
            "desired": self.desired,
            "demand": self.demand,
            "upper_threshold": self.upper_threshold,
            "lower_threshold": self.lower_threshold,
            "actions": [action_json(a) for a in self.actions],
            "acted": self.acted,
            "reason": self.reason,
        }


# -- small helpers -------------------------------------------------------------------------------


class RollingQuantile:
    """Quantiles of the last ``size`` values: a FIFO beside a sorted list (O(size) memmove per add)."""

    __slots__ = ("_fifo", "_sorted", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, value: float) -> None:
        if len(self._fifo) == self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._fifo.append(value)
        bisect.insort(self._sorted, value)

    def quantile(self, q: float, default: float) -> float:
        """The nearest-rank ``q`` quantile, or ``default`` when empty."""
        if not self._sorted:
            return default
        idx = min(len(self._sorted) - 1, max(0, math.ceil(q * len(self._sorted)) - 1))
        return self._sorted[idx]


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope per step of equally spaced values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


# -- the core ------------------------------------------------------------------------------------


@dataclass
class _Evaluation:
    """The last step's reasoning, for ``status()``."""

    ts: float = 0.0
    mode: str = "reactive"
    why_mode: str = "no step yet"
    demand: float = 0.0
    demand_capped: bool = False
    horizon_steps: int = 0
    forecast_model: str = ""
    load: float = 0.0
    upper: float = 0.0
    lower: float = 0.0
    imbalance: float = 1.0
    band: float = 0.0
    desired_out: int = 0
    desired_in: int = 0
    ready: int = 0
    provisioning: int = 0
    draining: int = 0
    blocked: str = ""


class ScalingCore:
    """The scaler's decisions, one ``step`` per forecast step; no I/O, no clock of its own."""

    def __init__(self, settings: ScaleSettings | None = None) -> None:
        self.settings = settings if settings is not None else ScaleSettings()
        problems = self.settings.errors()
        if problems:
            raise ValueError("; ".join(problems))
        s = self.settings
        self._durations: deque[float] = deque(maxlen=s.lead_time_samples)
        self._imbalance = RollingQuantile(s.history_steps)
        self._volatility = RollingQuantile(s.history_steps)
        self._loads: deque[float] = deque(maxlen=s.trend_steps)
        self._max_load = 0.0
        self._last_load: float | None = None
        self._in_window: deque[tuple[float, int]] = deque()  # (ts, scale-in recommendation)
        self._in_since: float | None = None  # when the current stabilisation window started
        self._last_out_ts = -math.inf
        self._last_action_ts = -math.inf
        self._failures = 0  # consecutive failed provisionings
        self._failures_total = 0
        self._phases: dict[str, Phase] = {}
        self._draining_since: dict[str, float] = {}
        self._stopped: set[str] = set()
        self._manual: int | None = None
        self._decisions: deque[Decision] = deque(maxlen=s.decisions_kept)
        self._last_reason = ""
        self._eval = _Evaluation()
        self.steps = 0
        self.reactive_steps = 0
        self.decisions_total = 0

    # -- inputs besides the step -----------------------------------------------------------------

    def provisioned(self, duration_s: float, ok: bool) -> None:
        """A provisioning finished after ``duration_s``; a success's duration feeds the lead time."""
        if ok:
            self._durations.append(max(0.0, float(duration_s)))
            self._failures = 0
        else:
            self._failures += 1
            self._failures_total += 1

    def request_capacity(self, servers: int | None) -> int | None:
        """Hold the fleet at ``servers`` (clamped to min/max) until called with None; returns the target."""
        s = self.settings
        self._manual = None if servers is None else max(s.min_servers, min(s.max_servers, int(servers)))
        return self._manual

    @property
    def lead_time_s(self) -> float:
        if not self._durations:
            return self.settings.initial_lead_time_s
        return quantile(list(self._durations), self.settings.lead_time_quantile)

    # -- the step --------------------------------------------------------------------------------

    def step(self, obs: Observation) -> list[Action]:
        s = self.settings
        now = obs.now
        self.steps += 1
        ready = [v for v in obs.servers if v.phase is Phase.READY]
        provisioning = [v for v in obs.servers if v.phase is Phase.PROVISIONING]
        draining = [v for v in obs.servers if v.phase is Phase.DRAINING]
        load = float(obs.load) if obs.load is not None else sum(v.load for v in obs.servers)
        if not math.isfinite(load) or load < 0:
            load = 0.0
        self._learn_history(load, ready)

        actions: list[Action] = []
        # Servers that just became ready take the connections hashing now sends them.
        newly_ready = tuple(v.name for v in ready if self._is_new(v))
        if newly_ready:
            actions.append(
                Migrate(
                    newly_ready, (), s.migrations_per_s, "ready: move the connections hashing now places here"
                )
            )
        self._phases = {v.name: v.phase for v in obs.servers}
        actions += self._stops(now, draining)

        ev = self._evaluate(obs, load, len(ready), len(provisioning), len(draining))
        current = len(ready) + len(provisioning)
        scale = self._decide(now, ev, ready, provisioning, current)
        if scale is not None:
            desired, reason, scale_actions = scale
            acted = not s.forecast_only
            self._record(
                Decision(
                    now,
                    ev.mode,
                    current,
                    desired,
                    ev.demand,
                    ev.upper,
                    ev.lower,
                    tuple(scale_actions),
                    acted,
                    reason,
                )
            )
            if acted:
                actions += scale_actions
                self._last_action_ts = now
                if any(isinstance(a, Provision) for a in scale_actions):
                    self._last_out_ts = now
                for a in scale_actions:
                    if isinstance(a, Drain):
                        for name in a.names:
                            self._draining_since[name] = now
                            self._phases[name] = Phase.DRAINING
        elif ev.blocked and ev.blocked != self._last_reason:
            desired = ev.desired_out if ev.desired_out > current else ev.desired_in
            self._record(
                Decision(now, ev.mode, current, desired, ev.demand, ev.upper, ev.lower, (), False, ev.blocked)
            )
        self._last_reason = ev.blocked if scale is None else ""
        return [] if s.forecast_only else actions

    def _is_new(self, v: ServerView) -> bool:
        """Ready now but not at the previous step (a server the scaler saw before it was provisioned,
        or one that started between two steps); on the first step every server is taken as settled."""
        if self.steps <= 1:
            return False
        return self._phases.get(v.name, Phase.PROVISIONING) is Phase.PROVISIONING

    def _learn_history(self, load: float, ready: Sequence[ServerView]) -> None:
        # Servers that became ready during the step have not had a full step of traffic (their
        # connections are still being moved): they would read as imbalance that is not there.
        settled = [v for v in ready if not self._is_new(v)]
        if len(settled) >= 2:
            mean = sum(v.load for v in settled) / len(settled)
            if mean > 0:
                for v in settled:
                    self._imbalance.add(v.load / mean)
        if self._last_load is not None and self._last_load > 0:
            self._volatility.add(abs(load - self._last_load) / self._last_load)
        self._last_load = load
        self._loads.append(load)
        self._max_load = max(self._max_load, load)

    def _evaluate(
        self, obs: Observation, load: float, n_ready: int, n_prov: int, n_drain: int
    ) -> _Evaluation:
        s = self.settings
        ev = _Evaluation(ts=obs.now, load=load, ready=n_ready, provisioning=n_prov, draining=n_drain)
        ev.imbalance = min(s.max_imbalance, max(1.0, self._imbalance.quantile(s.imbalance_quantile, 1.0)))
        ev.band = min(
            s.hysteresis_max, max(s.hysteresis_min, self._volatility.quantile(s.volatility_quantile, 0.0))
        )
        ev.upper = s.capacity * s.target_utilization / ev.imbalance
        ev.lower = ev.upper * (1.0 - ev.band)

        fc = obs.forecast
        step_s = fc.step_s if fc is not None and fc.step_s > 0 else s.step_s
        lead = self.lead_time_s
        horizon = math.ceil(lead / step_s) + 1
        ev.horizon_steps = horizon
        usable, why = self._usable(fc, horizon)
        if self._manual is not None:
            ev.mode, ev.why_mode = "manual", f"manual target of {self._manual} servers"
            ev.demand = self._manual * ev.upper
        elif usable:
            assert fc is not None
            pts = fc.points[:horizon]
            w = s.band_weight
            demand = max(p[2] + w * (p[3] - p[2]) for p in pts)
            cap = s.forecast_cap_factor * self._max_load
            ev.demand_capped = self._max_load > 0 and demand > cap
            ev.demand = cap if ev.demand_capped else demand
            ev.mode = "predictive"
            ev.forecast_model = fc.model
            ev.why_mode = f"{fc.model or 'forecast'} beats naive; hi band over {len(pts)} steps"
        else:
            trend = _slope(list(self._loads)) if len(self._loads) >= 2 else 0.0
            ev.demand = max(load, load + trend * horizon)
            ev.mode, ev.why_mode = "reactive", why
            self.reactive_steps += 1
        ev.desired_out = math.ceil(ev.demand / ev.upper - 1e-9) if ev.demand > 0 else 0
        in_demand = max(ev.demand, load)
        ev.desired_in = math.ceil(in_demand / ev.lower - 1e-9) if in_demand > 0 else 0
        self._eval = ev
        return ev

    @staticmethod
    def _usable(fc: ForecastView | None, horizon: int) -> tuple[bool, str]:
        if fc is None or not fc.points:
            return False, "no forecast yet: reactive rules"
        h = min(horizon, len(fc.points))
        beats = fc.beats_naive_at[h - 1] if len(fc.beats_naive_at) >= h else fc.beats_naive
        if not beats:
            return False, f"forecast does not beat naive {h} steps ahead: reactive rules"
        for p in fc.points[:h]:
            if len(p) != 4 or not all(math.isfinite(x) for x in p) or p[3] < 0:
                return False, "forecast has non-finite or negative points: reactive rules"
        return True, ""

    def _decide(
        self,
        now: float,
        ev: _Evaluation,
        ready: list[ServerView],
        provisioning: list[ServerView],
        current: int,
    ) -> tuple[int, str, list[Action]] | None:
        s = self.settings
        ev.blocked = ""
        lo, hi = s.min_servers, s.max_servers
        if ev.mode == "manual":
            assert self._manual is not None
            target = self._manual
            if target > current:
                return (
                    target,
                    f"manual target {target} > {current} servers",
                    [Provision(target - current, f"manual target of {target} servers")],
                )
            if target < current and not provisioning:
                names = self._pick_drain(ready, current - target, allow_all=True)
                if names:
                    return (
                        target,
                        f"manual target {target} < {current} servers",
                        [
                            Drain(names, f"manual target of {target} servers"),
                            Migrate((), names, s.migrations_per_s, "draining for the manual target"),
                        ],
                    )
            if target < current:
                ev.blocked = f"manual: {target} servers wanted; waiting for the provisioning in flight"
            return None

        # Out of bounds is fixed at once, whatever the cooldowns say.
        if current < lo:
            return (
                lo,
                f"{current} servers < min_servers {lo}",
                [Provision(lo - current, f"below min_servers ({current} < {lo})")],
            )
        desired_out = min(hi, max(lo, ev.desired_out))
        if desired_out > current:
            wait = s.scale_out_cooldown_s * (2 ** min(self._failures, 5))
            if now - self._last_out_ts < wait:
                ev.blocked = (
                    f"{ev.mode}: want {desired_out} servers, scale-out cooldown "
                    f"({wait:g} s{', after failed provisioning' if self._failures else ''})"
                )
                return None
            self._in_window.clear()
            self._in_since = None
            reason = (
                f"{ev.mode}: demand {ev.demand:.4g} over the next {ev.horizon_steps} steps needs {desired_out} "
                f"servers at {ev.upper:.4g} each; have {current}"
            )
            if ev.demand_capped:
                reason += f" (forecast capped at {s.forecast_cap_factor:g}x the largest load seen)"
            return desired_out, reason, [Provision(desired_out - current, reason)]
        if ev.desired_out > hi and current >= hi:
            ev.blocked = f"{ev.mode}: want {ev.desired_out} servers, held at max_servers {hi}"

        # Scale-in: the largest recommendation of the stabilisation window must be below what is ready.
        rec = min(hi, max(lo, ev.desired_in))
        self._in_window.append((now, rec))
        if self._in_since is None:
            self._in_since = now
        while self._in_window[0][0] < now - s.scale_in_stabilization_s:
            self._in_window.popleft()
        n_ready = len(ready)
        if n_ready > hi and not provisioning:
            names = self._pick_drain(ready, n_ready - hi, allow_all=True)
            return (
                hi,
                f"{n_ready} servers > max_servers {hi}",
                [
                    Drain(names, f"above max_servers ({n_ready} > {hi})"),
                    Migrate((), names, s.migrations_per_s, "draining above max_servers"),
                ],
            )
        window_rec = max(r for _, r in self._in_window)
        if window_rec >= n_ready:
            return None
        if provisioning:
            ev.blocked = f"{ev.mode}: {window_rec} servers would do, but a provisioning is in flight"
            return None
        if now - self._in_since < s.scale_in_stabilization_s - 1e-6:
            ev.blocked = (
                f"{ev.mode}: {window_rec} servers would do; stabilising ({s.scale_in_stabilization_s:g} s)"
            )
            return None
        if now - self._last_action_ts < s.scale_in_cooldown_s:
            ev.blocked = (
                f"{ev.mode}: {window_rec} servers would do; scale-in cooldown ({s.scale_in_cooldown_s:g} s)"
            )
            return None
        most = max(1, math.floor(n_ready * s.scale_in_max_fraction))
        count = min(most, n_ready - window_rec)
        names = self._pick_drain(ready, count, allow_all=False)
        if not names:
            return None
        target = n_ready - len(names)
        reason = (
            f"{ev.mode}: demand {max(ev.demand, ev.load):.4g} fits {window_rec} servers at the lower threshold "
            f"{ev.lower:.4g} for {s.scale_in_stabilization_s:g} s; have {n_ready}"
        )
        return (
            target,
            reason,
            [Drain(names, reason), Migrate((), names, s.migrations_per_s, "draining for scale-in")],
        )

    def _pick_drain(self, ready: Sequence[ServerView], count: int, *, allow_all: bool) -> tuple[str, ...]:
        """The ``count`` least loaded ready servers (fewest connections to move), never below min_servers."""
        keep = 0 if allow_all else self.settings.min_servers
        count = min(count, len(ready) - keep)
        if count <= 0:
            return ()
        order = sorted(ready, key=lambda v: (v.connections, v.load, v.health or 0.0, v.name))
        return tuple(v.name for v in order[:count])

    def _stops(self, now: float, draining: Iterable[ServerView]) -> list[Action]:
        s = self.settings
        empty, late = [], []
        for v in draining:
            if v.name in self._stopped:
                continue
            since = self._draining_since.setdefault(v.name, now)
            if v.connections == 0 and v.load == 0:
                empty.append(v.name)
            elif now - since >= s.drain_timeout_s:
                late.append(v.name)
        out: list[Action] = []
        if empty:
            out.append(Stop(tuple(empty), "drained: no connection left"))
        if late:
            out.append(Stop(tuple(late), f"drain_timeout_s ({s.drain_timeout_s:g} s) passed"))
        if not s.forecast_only:
            self._stopped.update(empty + late)
        live = {v.name for v in draining}
        self._stopped &= live | set(empty + late)
        for name in list(self._draining_since):
            if name not in live:
                del self._draining_since[name]
        return out

    def _record(self, decision: Decision) -> None:
        last = self._decisions[-1] if self._decisions else None
        if (
            last is not None
            and not decision.acted
            and not last.acted
            and (last.desired, last.mode, [type(a) for a in last.actions])
            == (decision.desired, decision.mode, [type(a) for a in decision.actions])
        ):
            return  # forecast-only mode repeats the same wish every step: keep the first
        self._decisions.append(decision)
        self.decisions_total += 1

    # -- reporting -------------------------------------------------------------------------------

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(self._decisions)

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``GET /scaling``: forecast, thresholds, last decisions and why."""
        s = self.settings
        ev = self._eval
        return {
            "mode": ev.mode,
            "why": ev.why_mode,
            "forecast_only": s.forecast_only,
            "manual_target": self._manual,
            "ts": ev.ts,
            "servers": {"ready": ev.ready, "provisioning": ev.provisioning, "draining": ev.draining},
            "load": ev.load,
            "forecast": {
                "model": ev.forecast_model,
                "horizon_steps": ev.horizon_steps,
                "demand": ev.demand,
                "capped": ev.demand_capped,
                "cap": s.forecast_cap_factor * self._max_load,
            },
            "lead_time_s": self.lead_time_s,
            "lead_time_measured": len(self._durations),
            "thresholds": {
                "upper_per_server": ev.upper,
                "lower_per_server": ev.lower,
                "imbalance": ev.imbalance,
                "hysteresis_band": ev.band,
                "capacity": s.capacity,
                "target_utilization": s.target_utilization,
            },
            "desired": {"scale_out": ev.desired_out, "scale_in": ev.desired_in},
            "blocked": ev.blocked,
            "provision_failures_total": self._failures_total,
            "steps": self.steps,
            "reactive_steps": self.reactive_steps,
            "decisions": [d.to_json() for d in reversed(self._decisions)],
            "settings": asdict(s),
        }


# -- migration planning --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """A live connection as migration planning needs it."""

    conn_id: int | str
    key: int
    server: str
    predicted_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class MigrationOrder:
    conn_id: int | str
    source: str
    target: str
    predicted_rate: float


def plan_migrations(
    conns: Iterable[ConnectionView],
    place: Callable[[int], str | None],
    *,
    onto: Collection[str] = (),
    off: Collection[str] = (),
    limit: int,
) -> list[MigrationOrder]:
    """Which connections to move now, highest predicted usage first, at most ``limit``.

    ``place(key)`` is the pool's placement with the new membership (new servers in, draining servers
    out).  A connection moves when it sits on a server in ``off``, or when placement now puts it on a
    server in ``onto``; connections whose placement did not change stay where they are.
    """
    onto_set, off_set = set(onto), set(off)
    orders = []
    for c in conns:
        if c.server not in off_set and not onto_set:
            continue
        target = place(c.key)
        if target is None or target == c.server:
            continue
        if c.server in off_set or target in onto_set:
            orders.append(MigrationOrder(c.conn_id, c.server, target, c.predicted_rate))
    orders.sort(key=lambda o: (-o.predicted_rate, str(o.conn_id)))
    return orders[: max(0, limit)]


class MigrationBudget:
    """A token bucket: ``per_s`` migrations a second, bursts up to ``burst`` (default one second's)."""

    __slots__ = ("_last", "_tokens", "burst", "per_s")

    def __init__(self, per_s: float, now: float, burst: float | None = None) -> None:
        self.per_s = per_s
        self.burst = per_s if burst is None else burst
        self._tokens = self.burst
        self._last = now

    def take(self, now: float, wanted: int) -> int:
        """How many of ``wanted`` migrations may start at ``now`` (those are spent)."""
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._last) * self.per_s)
        self._last = max(self._last, now)
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return max(0, granted)
