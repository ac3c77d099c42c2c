"""The scaling decision core, sans-IO: a fake clock, scripted loads and forecasts, asserted actions."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import orjson
import pytest

from proxy.scale.core import (
    ConnectionView,
    Drain,
    ForecastView,
    Migrate,
    MigrationBudget,
    Observation,
    Phase,
    Provision,
    RollingQuantile,
    ScaleSettings,
    ScalingCore,
    ServerView,
    Stop,
    plan_migrations,
)

STEP_S = 60.0
BASE = ScaleSettings(
    capacity=100.0,
    target_utilization=1.0,
    min_servers=1,
    max_servers=10,
    initial_lead_time_s=120.0,  # horizon: ceil(120 / 60) + 1 = 3 steps
    scale_out_cooldown_s=60.0,
    scale_in_cooldown_s=300.0,
    scale_in_stabilization_s=300.0,
    hysteresis_min=0.2,
    hysteresis_max=0.2,
)


def fc(his: list[float], *, beats: bool = True, mids: list[float] | None = None) -> ForecastView:
    mids = his if mids is None else mids
    return ForecastView(
        points=tuple((i * STEP_S, m * 0.5, m, h) for i, (m, h) in enumerate(zip(mids, his, strict=True), 1)),
        beats_naive=beats,
        step_s=STEP_S,
        model="scripted",
    )


def fleet(
    ready: int, load: float, *, prov: int = 0, draining: tuple[str, ...] = ()
) -> tuple[ServerView, ...]:
    per = load / ready if ready else 0.0
    return (
        tuple(ServerView(f"r{i}", Phase.READY, per, int(per > 0)) for i in range(ready))
        + tuple(ServerView(f"p{i}", Phase.PROVISIONING) for i in range(prov))
        + tuple(ServerView(n, Phase.DRAINING) for n in draining)
    )


def kinds(actions: list) -> list[str]:
    return [type(a).__name__ for a in actions]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def tick(self, steps: int = 1) -> float:
        self.now += steps * STEP_S
        return self.now


def test_ramp_provisions_for_the_upper_band_over_the_lead_time() -> None:
    core = ScalingCore(BASE)
    # Load 150 on 2 servers now; the hi band reaches 420 three steps ahead and 900 after the horizon.
    acts = core.step(Observation(0.0, fleet(2, 150.0), fc([200, 300, 420, 900])))
    (prov,) = acts
    assert isinstance(prov, Provision) and prov.count == 3  # ceil(420 / 100) - 2
    assert "predictive" in prov.reason and "420" in prov.reason
    st = core.status()
    assert st["mode"] == "predictive" and st["forecast"]["horizon_steps"] == 3


def test_no_action_while_the_forecast_fits() -> None:
    core = ScalingCore(BASE)
    assert core.step(Observation(0.0, fleet(3, 150.0), fc([200, 250, 260, 270]))) == []


def test_measured_provisioning_time_lengthens_the_horizon() -> None:
    spike_at_step_8 = [100.0] * 7 + [280.0] + [100.0] * 4
    quick = ScalingCore(BASE)
    assert quick.step(Observation(0.0, fleet(2, 100.0), fc(spike_at_step_8))) == []
    slow = ScalingCore(BASE)
    for duration_s in (400.0, 420.0, 450.0):  # slow starts: p90 450 s -> 9 steps ahead
        slow.provisioned(duration_s, ok=True)
    assert slow.lead_time_s == 450.0
    (prov,) = slow.step(Observation(0.0, fleet(2, 100.0), fc(spike_at_step_8)))
    assert isinstance(prov, Provision) and prov.count == 1 and "next 9 steps" in prov.reason


def test_spike_forecast_is_capped_at_a_multiple_of_the_largest_load_seen() -> None:
    core = ScalingCore(replace(BASE, max_servers=50))
    (prov,) = core.step(Observation(0.0, fleet(2, 100.0), fc([1e9, 1e9, 1e9])))
    assert isinstance(prov, Provision) and prov.count == 1  # 3 x 100 needs 3 servers, not 50
    assert "capped" in prov.reason
    assert core.status()["forecast"]["capped"] is True


def test_max_servers_holds_the_fleet_and_says_why() -> None:
    core = ScalingCore(replace(BASE, max_servers=4, forecast_cap_factor=100.0))
    (prov,) = core.step(Observation(0.0, fleet(2, 200.0), fc([900, 900, 900])))
    assert prov.count == 2
    acts = core.step(Observation(STEP_S * 5, fleet(4, 200.0), fc([900, 900, 900])))
    assert kinds(acts) == ["Migrate"]  # the two new servers fill up; nothing more is ordered
    assert "max_servers" in core.status()["blocked"]


def test_flapping_load_does_not_flap_the_fleet() -> None:
    core = ScalingCore(BASE)
    clock = Clock()
    ready = 3
    directions = []
    for i in range(120):
        load = 260.0 if i % 2 else 120.0  # swings every minute between 40% and 87% of 3 servers
        forecast = fc([load + 20, 280.0, 280.0])
        acts = core.step(Observation(clock.tick(), fleet(ready, load), forecast))
        for a in acts:
            if isinstance(a, Provision):
                ready += a.count
                directions.append(+1)
            elif isinstance(a, Drain):
                ready -= len(a.names)
                directions.append(-1)
    assert directions == []  # 280 fits 3 servers; 280 / (100 * 0.8) needs 4 at the lower threshold


def test_scale_in_waits_for_stabilisation_then_drains_migrates_and_stops() -> None:
    core = ScalingCore(BASE)
    clock = Clock()
    low = fc([100, 100, 100])
    seen = []
    for _ in range(5):  # the recommendation must hold for 300 s: steps at +60 .. +360
        seen.append(core.step(Observation(clock.tick(), fleet(6, 100.0), low)))
    assert all(a == [] for a in seen)
    assert "stabilising" in core.status()["blocked"]
    drain, migrate = core.step(Observation(clock.tick(), fleet(6, 100.0), low))
    assert isinstance(drain, Drain) and len(drain.names) == 3  # at most half the ready servers
    assert isinstance(migrate, Migrate) and migrate.off == drain.names and migrate.budget_per_s == 50.0
    # Next step: the drained servers still hold connections; then they are empty and are stopped.
    rest = tuple(ServerView(f"r{i}", Phase.READY, 33.0, 1) for i in range(3, 6))
    busy = tuple(ServerView(n, Phase.DRAINING, 1.0, 2) for n in drain.names)
    assert core.step(Observation(clock.tick(), rest + busy, low)) == []
    empty = tuple(ServerView(n, Phase.DRAINING) for n in drain.names)
    (stop,) = core.step(Observation(clock.tick(), rest + empty, low))
    assert isinstance(stop, Stop) and stop.names == drain.names
    assert core.step(Observation(clock.tick(), rest + empty, low)) == []  # Stop is said once


def test_drain_timeout_stops_a_server_that_never_empties() -> None:
    core = ScalingCore(replace(BASE, drain_timeout_s=120.0))
    stuck = (ServerView("r0", Phase.READY, 50.0, 1), ServerView("old", Phase.DRAINING, 5.0, 1))
    assert core.step(Observation(0.0, stuck, fc([50, 50, 50]))) == []
    assert core.step(Observation(60.0, stuck, fc([50, 50, 50]))) == []
    (stop,) = core.step(Observation(120.0, stuck, fc([50, 50, 50])))
    assert isinstance(stop, Stop) and stop.names == ("old",) and "drain_timeout_s" in stop.reason


def test_scale_in_picks_the_least_loaded_and_keeps_min_servers() -> None:
    core = ScalingCore(replace(BASE, min_servers=2, scale_in_max_fraction=1.0))
    servers = (
        ServerView("busy", Phase.READY, 60.0, 30),
        ServerView("idle", Phase.READY, 0.0, 0),
        ServerView("light", Phase.READY, 5.0, 2),
    )
    acts = []
    for i in range(6):
        acts = core.step(Observation(i * STEP_S, servers, fc([65, 65, 65])))
    (drain, _) = acts
    assert drain.names == ("idle",)  # one server would do, but min_servers is 2


def test_no_scale_in_while_a_provisioning_is_in_flight() -> None:
    core = ScalingCore(BASE)
    for i in range(10):
        acts = core.step(Observation(i * STEP_S, fleet(5, 100.0, prov=1), fc([100, 100, 100])))
        assert not any(isinstance(a, Drain) for a in acts)
    assert "provisioning is in flight" in core.status()["blocked"]


def test_slow_provisioning_is_not_ordered_twice() -> None:
    core = ScalingCore(BASE)
    (prov,) = core.step(Observation(0.0, fleet(2, 250.0), fc([400, 400, 400])))
    assert prov.count == 2
    for i in range(1, 10):  # the two servers take ten minutes; nothing more is ordered
        assert core.step(Observation(i * STEP_S, fleet(2, 250.0, prov=2), fc([400, 400, 400]))) == []


def test_failed_provisioning_backs_off_then_retries() -> None:
    core = ScalingCore(BASE)
    high = fc([400, 400, 400])
    (first,) = core.step(Observation(0.0, fleet(2, 300.0), high))
    assert isinstance(first, Provision)
    core.provisioned(5.0, ok=False)
    core.provisioned(5.0, ok=False)
    # Two failures: the 60 s cooldown becomes 240 s.
    assert core.step(Observation(60.0, fleet(2, 300.0), high)) == []
    assert core.step(Observation(180.0, fleet(2, 300.0), high)) == []
    assert "failed provisioning" in core.status()["blocked"]
    (again,) = core.step(Observation(240.0, fleet(2, 300.0), high))
    assert isinstance(again, Provision) and again.count == 2
    assert core.status()["provision_failures_total"] == 2
    assert core.lead_time_s == BASE.initial_lead_time_s  # failures are not provisioning times


def test_forecast_that_does_not_beat_naive_falls_back_to_reactive_rules() -> None:
    core = ScalingCore(BASE)
    # The forecast says 900, but it does not beat naive: the current load (250 on 2) is what counts.
    (prov,) = core.step(Observation(0.0, fleet(2, 250.0), fc([900, 900, 900], beats=False)))
    assert isinstance(prov, Provision) and prov.count == 1
    st = core.status()
    assert st["mode"] == "reactive" and "does not beat naive" in st["why"]
    assert core.reactive_steps == 1


@pytest.mark.parametrize(
    "forecast",
    [None, ForecastView((), True, STEP_S), fc([math.nan, 100, 100]), fc([math.inf, 100, 100])],
    ids=["missing", "empty", "nan", "inf"],
)
def test_broken_forecast_falls_back_to_reactive_rules(forecast: ForecastView | None) -> None:
    core = ScalingCore(BASE)
    (prov,) = core.step(Observation(0.0, fleet(1, 180.0), forecast))
    assert prov.count == 1 and "reactive" in prov.reason


def test_reactive_fallback_extrapolates_the_trend_over_the_lead_time() -> None:
    core = ScalingCore(BASE)
    acts = []
    for i, load in enumerate([100.0, 140.0, 180.0, 220.0]):  # +40 per step, 3 steps of horizon
        acts = core.step(Observation(i * STEP_S, fleet(3, load), None))
    (prov,) = acts
    assert prov.count == 1  # 220 + 3 * 40 = 340 -> 4 servers


def test_per_beats_naive_at_horizon_is_used() -> None:
    core = ScalingCore(BASE)
    view = replace(fc([300, 300, 300, 300]), beats_naive=False, beats_naive_at=(True, True, True, False))
    core.step(Observation(0.0, fleet(3, 100.0), view))
    assert core.status()["mode"] == "predictive"  # horizon 3: beats naive there


def test_new_servers_get_the_connections_hashing_gives_them() -> None:
    core = ScalingCore(BASE)
    core.step(Observation(0.0, fleet(1, 50.0, prov=1), fc([50, 50, 50])))
    servers = (ServerView("r0", Phase.READY, 50.0, 5), ServerView("p0", Phase.READY))
    (migrate,) = core.step(Observation(60.0, servers, fc([50, 50, 50])))
    assert isinstance(migrate, Migrate) and migrate.onto == ("p0",) and migrate.off == ()


def test_forecast_only_mode_records_decisions_without_acting() -> None:
    core = ScalingCore(replace(BASE, forecast_only=True))
    assert core.step(Observation(0.0, fleet(1, 150.0), fc([400, 400, 400]))) == []
    assert core.step(Observation(60.0, fleet(1, 150.0), fc([400, 400, 400]))) == []
    decisions = core.status()["decisions"]
    assert len(decisions) == 1 and decisions[0]["acted"] is False  # the same wish is recorded once
    assert decisions[-1]["actions"][0]["action"] == "provision" and decisions[-1]["desired"] == 4


def test_manual_target_overrides_forecast_and_cooldowns() -> None:
    core = ScalingCore(BASE)
    assert core.request_capacity(99) == 10  # clamped to max_servers
    assert core.request_capacity(4) == 4
    (prov,) = core.step(Observation(0.0, fleet(2, 10.0), fc([10, 10, 10])))
    assert prov.count == 2 and "manual" in prov.reason
    core.request_capacity(1)
    acts = core.step(Observation(1.0, fleet(4, 10.0), fc([10, 10, 10])))
    assert kinds(acts) == ["Migrate", "Drain", "Migrate"]  # fill the two new ones, then drain for 1
    assert len(acts[1].names) == 3
    core.request_capacity(None)
    core.step(Observation(2.0, fleet(1, 10.0), fc([10, 10, 10])))
    assert core.status()["mode"] == "predictive" and core.status()["manual_target"] is None


def test_below_min_servers_is_fixed_at_once() -> None:
    core = ScalingCore(replace(BASE, min_servers=2))
    (prov,) = core.step(Observation(0.0, (), None))
    assert prov.count == 2 and "min_servers" in prov.reason


def test_imbalance_between_servers_lowers_the_upper_threshold() -> None:
    core = ScalingCore(BASE)
    skewed = (ServerView("a", Phase.READY, 120.0, 10), ServerView("b", Phase.READY, 80.0, 8))
    acts = core.step(Observation(0.0, skewed, fc([190, 190, 190])))
    th = core.status()["thresholds"]
    assert th["imbalance"] == pytest.approx(1.2)
    assert th["upper_per_server"] == pytest.approx(100.0 / 1.2)
    (prov,) = acts  # 190 on two even servers would fit; the hot one overflows first
    assert prov.count == 1


def test_hysteresis_band_follows_the_load_volatility_within_bounds() -> None:
    core = ScalingCore(replace(BASE, hysteresis_min=0.05, hysteresis_max=0.4, volatility_quantile=0.9))
    for i in range(20):
        core.step(Observation(i * STEP_S, fleet(2, 100.0 if i % 2 else 125.0), fc([130, 130, 130])))
    band = core.status()["thresholds"]["hysteresis_band"]
    assert band == pytest.approx(0.25)  # |125 - 100| / 100
    calm = ScalingCore(replace(BASE, hysteresis_min=0.05, hysteresis_max=0.4))
    for i in range(20):
        calm.step(Observation(i * STEP_S, fleet(2, 100.0), fc([100, 100, 100])))
    assert calm.status()["thresholds"]["hysteresis_band"] == 0.05


def test_status_is_json_and_explains_the_decision() -> None:
    core = ScalingCore(BASE)
    core.step(Observation(0.0, fleet(2, 150.0), fc([400, 400, 400])))
    data = orjson.loads(orjson.dumps(core.status()))
    assert data["decisions"][0]["reason"].startswith("predictive: demand 400")
    assert {"upper_per_server", "lower_per_server"} <= data["thresholds"].keys()
    assert data["lead_time_s"] == 120.0 and data["servers"] == {"ready": 2, "provisioning": 0, "draining": 0}


def test_invalid_settings_are_reported_together() -> None:
    bad = replace(BASE, capacity=0.0, target_utilization=1.5, hysteresis_min=0.5, hysteresis_max=0.1)
    problems = bad.errors()
    assert len(problems) == 3
    with pytest.raises(ValueError, match="capacity"):
        ScalingCore(bad)


def test_rolling_quantile_forgets_old_values() -> None:
    q = RollingQuantile(3)
    for v in (10.0, 1.0, 2.0, 3.0):
        q.add(v)
    assert len(q) == 3 and q.quantile(1.0, 0.0) == 3.0 and q.quantile(0.0, 0.0) == 1.0
    assert RollingQuantile(3).quantile(0.5, 7.0) == 7.0


def test_plan_migrations_moves_heaviest_first_within_the_limit() -> None:
    conns = [
        ConnectionView(1, key=1, server="a", predicted_rate=1.0),
        ConnectionView(2, key=2, server="a", predicted_rate=9.0),
        ConnectionView(3, key=3, server="b", predicted_rate=5.0),
        ConnectionView(4, key=4, server="a", predicted_rate=7.0),
    ]
    placement = {1: "new", 2: "new", 3: "b", 4: "new"}
    orders = plan_migrations(conns, placement.get, onto=["new"], limit=2)
    assert [(o.conn_id, o.source, o.target) for o in orders] == [(2, "a", "new"), (4, "a", "new")]
    off = plan_migrations(conns, {1: "b", 2: "b", 3: "b", 4: "b"}.get, off=["a"], limit=10)
    assert [o.conn_id for o in off] == [2, 4, 1]


def test_migration_budget_refills_per_second() -> None:
    budget = MigrationBudget(per_s=10.0, now=0.0)
    assert budget.take(0.0, 25) == 10
    assert budget.take(0.0, 5) == 0
    assert budget.take(0.5, 5) == 5
    assert budget.take(100.0, 50) == 10  # bursts are capped at a second's worth


def test_core_and_simulator_are_sans_io() -> None:
    """The decision core and the simulator import no event loop, socket or learner: the proxy and the
    benchmark run the same code, and the learner's models stay in the learner process."""
    code = (
        "import sys, proxy.scale, proxy.scale.core, proxy.scale.sim; "
        "print(sorted(m for m in ('asyncio', 'socket', 'aiohttp', 'uvloop', 'river', 'model') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
