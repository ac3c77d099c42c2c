"""The ``Learner`` facade: step timestamps, rejected input, gaps, caching, JSON, determinism."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from model.learn import Forecast, Learner, Observed
from tests.model.learn.synthetic import SEASON, adversarial_series, seasonal_series

STEP_S = 60.0
T0 = 1_700_000_040.0  # a step boundary


def learner(**kwargs: object) -> Learner:
    return Learner(step_s=STEP_S, season_steps=SEASON, seed=3, max_horizon=6, **kwargs)  # type: ignore[arg-type]


def feed(lr: Learner, ys: list[float], start: float = T0) -> None:
    for i, y in enumerate(ys):
        assert lr.observe_aggregate(start + i * STEP_S, y) is Observed.LEARNED


def test_points_are_the_next_steps_with_a_band() -> None:
    lr = learner()
    ys = seasonal_series(3)
    feed(lr, ys)
    fc = lr.forecast(4)
    last = T0 + (len(ys) - 1) * STEP_S
    assert [p[0] for p in fc.points] == [last + k * STEP_S for k in (1, 2, 3, 4)]
    assert all(0.0 <= lo <= mid <= hi for _, lo, mid, hi in fc.points)
    assert len(fc.models) == 4 and fc.model_name == fc.models[-1]
    assert fc.beats_naive == fc.beats_naive_at[-1]
    assert fc.step_s == STEP_S


def test_forecast_before_any_data_has_no_points() -> None:
    fc = learner().forecast(3)
    assert fc.points == () and fc.model_name == "naive" and not fc.beats_naive


def test_forecast_is_cached_until_the_next_step() -> None:
    lr = learner()
    feed(lr, seasonal_series(1))
    first = lr.forecast(6)
    assert lr.forecast(6) is first
    lr.observe_aggregate(T0 + SEASON * STEP_S, 50.0)
    assert lr.forecast(6) is not first


def test_invalid_values_and_out_of_order_steps_are_rejected_as_values() -> None:
    lr = learner()
    feed(lr, [10.0, 11.0, 12.0])
    before = lr.forecast(6)
    assert lr.observe_aggregate(T0 + 3 * STEP_S, -1.0) is Observed.REJECTED_VALUE
    assert lr.observe_aggregate(T0 + 3 * STEP_S, math.nan) is Observed.REJECTED_VALUE
    assert lr.observe_aggregate(T0 + 3 * STEP_S, math.inf) is Observed.REJECTED_VALUE
    assert lr.observe_aggregate(T0 + 2 * STEP_S, 5.0) is Observed.REJECTED_OUT_OF_ORDER  # a repeat
    assert lr.observe_aggregate(T0, 5.0) is Observed.REJECTED_OUT_OF_ORDER
    assert lr.forecast(6) == before
    s = lr.statistics()
    assert (s["rejected_values"], s["rejected_out_of_order"], s["steps_learned"]) == (3, 2, 3)


def test_a_short_gap_is_imputed_from_a_season_ago_without_scoring() -> None:
    lr = learner()
    ys = seasonal_series(2)
    feed(lr, ys)
    naive = lr.selector.child("naive")
    scored = naive.scored(1)
    next_ts = T0 + len(ys) * STEP_S
    got = lr.observe_aggregate(next_ts + 3 * STEP_S, 70.0)  # three steps missing
    assert got is Observed.LEARNED_AFTER_GAP and got.accepted
    assert lr.statistics()["steps_imputed"] == 3
    assert naive.scored(1) == scored + 1  # only the real step scored the forecast before it
    assert naive.steps == len(ys) + 4
    snaive = lr.selector.child("seasonal_naive")
    # The imputed steps were the values one season earlier.
    assert list(snaive._hist)[-4:-1] == ys[len(ys) - SEASON : len(ys) - SEASON + 3]
    assert lr.forecast(1).points[0][0] == next_ts + 4 * STEP_S


def test_a_gap_longer_than_max_gap_resets_the_models() -> None:
    lr = learner(max_gap_steps=5)
    feed(lr, seasonal_series(2))
    got = lr.observe_aggregate(T0 + 1000 * STEP_S, 30.0)
    assert got is Observed.LEARNED_AFTER_RESET
    assert lr.statistics()["resets"] == 1
    assert lr.selector.child("naive").steps == 1
    assert lr.forecast(2).points[0][1:] == (30.0, 30.0, 30.0)


def test_statistics_are_json_without_nan() -> None:
    lr = learner()
    json.dumps(lr.statistics(), allow_nan=False)  # before any data
    for i, y in enumerate(adversarial_series()):
        lr.observe_aggregate(T0 + i * STEP_S, y)
        json.dumps(lr.forecast(6).to_json(), allow_nan=False)
    json.dumps(lr.statistics(), allow_nan=False)


def test_same_inputs_same_outputs() -> None:
    a, b = learner(), learner()
    ys = seasonal_series(3, seed=9) + adversarial_series()
    for i, y in enumerate(ys):
        a.observe_aggregate(T0 + i * STEP_S, y)
        b.observe_aggregate(T0 + i * STEP_S, y)
    fa, fb = a.forecast(8), b.forecast(8)
    assert isinstance(fa, Forecast) and fa == fb
    assert a.statistics() == b.statistics()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        Learner(step_s=0, season_steps=SEASON)
    with pytest.raises(ValueError):
        Learner(step_s=60, season_steps=1)
    with pytest.raises(ValueError):
        learner().forecast(0)


def test_importing_model_does_not_import_river() -> None:
    code = "import sys, model, model.learner.collector; assert 'river' not in sys.modules, 'river imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
