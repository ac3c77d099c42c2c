"""The fleet simulator on tiny synthetic traces, with every policy it ships."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from proxy.scale.core import Drain, ForecastView, Provision, ScaleSettings
from proxy.scale.sim import CorePolicy, Fleet, FleetSpec, PerfectPolicy, ReactivePolicy, simulate

SPEC = FleetSpec(capacity=10.0, provision_delay_s=120.0, step_s=60.0, initial_servers=2)
# Two servers' worth, a step up to five servers' worth (within 3x the largest load seen), and back.
TRACE = [20.0] * 10 + [45.0] * 20 + [20.0] * 30
SETTINGS = ScaleSettings(
    capacity=10.0,
    target_utilization=1.0,
    max_servers=10,
    initial_lead_time_s=120.0,
    scale_in_stabilization_s=300.0,
)


def oracle(trace: list[float]):
    def at(t: int) -> ForecastView:
        future = [trace[min(len(trace) - 1, t + k)] for k in range(1, 13)]
        return ForecastView(tuple((0.0, y, y, y) for y in future), True, 60.0, "oracle")

    return at


class Scripted:
    """A policy that plays back fixed actions, to check the simulator's own accounting."""

    name = "scripted"

    def __init__(self, script: dict[int, list]) -> None:
        self.script = script

    def provisioned(self, duration_s: float, ok: bool) -> None:
        pass

    def decide(self, t: int, now: float, load: float, fleet: Fleet) -> list:
        return self.script.get(t, [])


def test_constant_fleet_accounting_is_exact() -> None:
    res = simulate([5.0, 15.0, 25.0, 5.0], replace(SPEC, initial_servers=2), Scripted({}))
    assert res.server_minutes == 8.0
    assert res.under_provisioned_minutes == 1.0  # only the 25
    assert res.unserved_load == 5.0 and res.unserved_share == pytest.approx(5.0 / 50.0)
    assert res.actions == 0 and res.peak_servers == 2


def test_provisioning_delay_bills_from_the_order_and_serves_after_the_delay() -> None:
    # Ordered after step 0 with a 2-step delay: ready from step 3, billed from step 1.
    one = replace(SPEC, initial_servers=1)
    res = simulate([0.0, 20.0, 20.0, 20.0, 20.0], one, Scripted({0: [Provision(1, "test")]}))
    assert res.under_provisioned_minutes == 2.0  # steps 1 and 2
    assert res.server_minutes == 1 + 4 * 2
    assert res.actions == 1 and res.scale_outs == 1


def test_reversals_count_direction_changes_within_the_window() -> None:
    script = {0: [Provision(1, "up")], 5: [Drain(("s0",), "down")], 30: [Provision(1, "up")]}
    res = simulate([1.0] * 40, SPEC, Scripted(script))
    assert res.actions == 3 and res.reversals == 1  # down after 5 min reverses; up after 25 min does not


def test_score_from_skips_the_warm_up() -> None:
    res = simulate([50.0] * 10, SPEC, Scripted({}), score_from=6)
    assert res.steps == 4 and res.under_provisioned_minutes == 4.0 and res.server_minutes == 8.0


def test_perfect_foresight_is_never_under_provisioned_and_uses_the_fewest_servers() -> None:
    perfect = simulate(TRACE, SPEC, PerfectPolicy(TRACE, SPEC))
    assert perfect.under_provisioned_minutes == 0
    reactive = simulate(TRACE, SPEC, ReactivePolicy(10.0, 1.0))
    assert reactive.under_provisioned_minutes >= 3  # sees the step, then waits out the delay
    assert perfect.server_minutes <= reactive.server_minutes


def test_reactive_policy_follows_hpa_rules() -> None:
    res = simulate(TRACE, SPEC, ReactivePolicy(10.0, 1.0, stabilization_s=300.0))
    # Up once to 5 servers at the step; down after the 300 s window once the load drops.
    assert res.scale_outs == 1 and res.scale_ins == 1 and res.peak_servers == 5
    assert res.under_provisioned_minutes == 3.0  # the step itself + 2 minutes of delay


def test_shipped_core_with_a_perfect_forecast_anticipates_the_step() -> None:
    pol = CorePolicy(SETTINGS, oracle(TRACE))
    res = simulate(TRACE, SPEC, pol)
    assert res.under_provisioned_minutes == 0
    assert res.reversals == 0 and res.scale_outs >= 1 and res.scale_ins >= 1
    assert pol.core.lead_time_s == SPEC.provision_delay_s  # measured from the simulated starts
    assert pol.core.status()["mode"] == "predictive"


def test_shipped_core_without_a_forecast_is_reactive() -> None:
    pol = CorePolicy(SETTINGS, lambda t: None)
    res = simulate(TRACE, SPEC, pol)
    assert res.under_provisioned_minutes >= 3
    assert pol.core.reactive_steps == len(TRACE)


def test_core_runs_on_the_real_learner_forecast() -> None:
    """``ForecastView.of`` takes ``model.learn.Forecast`` as the learner serves it, and a cycle the
    learner can forecast is scaled ahead of time (as ``bench scale`` does on the real traces)."""
    from model.learn import Learner

    season = 24
    trace = [20.0 + 25.0 * max(0.0, math.sin(2 * math.pi * t / season)) for t in range(season * 12)]
    learner = Learner(step_s=60.0, season_steps=season, seed=1)
    views = []
    for t, y in enumerate(trace):
        learner.observe_aggregate(t * 60.0, y)
        views.append(ForecastView.of(learner.forecast(12)))
    assert len(views[-1].points) == 12 and len(views[-1].beats_naive_at) == 12
    warm = season * 6
    pol = CorePolicy(SETTINGS, views.__getitem__)
    predictive = simulate(trace, SPEC, pol, score_from=warm)
    reactive = simulate(trace, SPEC, ReactivePolicy(10.0, 1.0), score_from=warm)
    assert pol.core.reactive_steps < pol.core.steps  # the forecast beat naive for part of the run
    assert predictive.under_provisioned_minutes < reactive.under_provisioned_minutes
