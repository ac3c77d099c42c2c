"""Forecasters of the aggregate series: exact baselines, safety on hostile input, bounded memory,
bands, determinism, and the selector's choice."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from river import time_series

from model.learn.forecasters import (
    Analog,
    BaseForecaster,
    Forecaster,
    HoltWinters,
    Naive,
    ProfileSmoothing,
    SeasonalNaive,
    Selector,
    Snarimax,
    default_forecasters,
    default_selector,
)
from tests.model.learn.synthetic import SEASON, adversarial_series, seasonal_series

H = 6


def small(name: str) -> BaseForecaster:
    """Each forecaster with settings small enough for short test series."""
    common = {
        "max_horizon": H,
        "error_halflife_steps": SEASON,
        "cap_halflife_steps": SEASON,
        "band_window": 64,
    }
    return {
        "naive": lambda: Naive(**common),
        "seasonal_naive": lambda: SeasonalNaive(SEASON, **common),
        "exp_smoothing": lambda: HoltWinters(
            name="exp_smoothing", alpha=0.3, beta=None, gamma=None, **common
        ),
        "holt_winters": lambda: HoltWinters(season_steps=SEASON, **common),
        "profile_smoothing": lambda: ProfileSmoothing(SEASON, window_steps=2, **common),
        "snarimax": lambda: Snarimax(p=4, d=1, season_steps=SEASON, **common),
        "analog": lambda: Analog(pattern_steps=3, baseline_steps=12, memory=80, neighbours=5, **common),
    }[name]()


ALL = ["naive", "seasonal_naive", "exp_smoothing", "holt_winters", "profile_smoothing", "snarimax", "analog"]


def feed(f: BaseForecaster, ys: list[float]) -> None:
    for y in ys:
        f.learn_one(y)


def assert_sane(f: BaseForecaster, horizon: int = H) -> None:
    values = f.forecast(horizon)
    band = f.forecast_band(horizon)
    assert len(values) == horizon and len(band) == horizon
    for v, (lo, mid, hi) in zip(values, band, strict=True):
        assert math.isfinite(v) and 0.0 <= v <= f.cap
        assert all(math.isfinite(x) for x in (lo, mid, hi))
        assert 0.0 <= lo <= mid <= hi
        assert mid == v


# -- exact baselines ------------------------------------------------------------------------------


def test_naive_repeats_the_last_value() -> None:
    f = small("naive")
    feed(f, [3.0, 9.0, 4.0])
    assert f.forecast(3) == [4.0, 4.0, 4.0]


def test_seasonal_naive_repeats_the_last_season_and_wraps() -> None:
    f = SeasonalNaive(3, max_horizon=H)
    feed(f, [1.0, 2.0])
    assert f.forecast(2) == [2.0, 2.0]  # less than a season seen: last value
    feed(f, [3.0, 10.0, 20.0, 30.0])  # last season: 10, 20, 30
    assert f.forecast(5) == [10.0, 20.0, 30.0, 10.0, 20.0]


def test_holt_winters_starts_with_a_flat_additive_season() -> None:
    f = small("holt_winters")
    feed(f, seasonal_series(1))  # exactly one season: river initialises on it
    assert list(f._model.season) == [0.0] * SEASON
    level = f._model.level[-1]
    assert level == pytest.approx(np.mean(seasonal_series(1)))


def test_forecasts_start_at_zero_and_horizons_past_the_tracked_ones_extend() -> None:
    f = small("analog")
    assert f.forecast(3) == [0.0, 0.0, 0.0]
    feed(f, seasonal_series(6))
    long = f.forecast(H + 4)
    assert long[:H] == f.forecast(H)
    assert long[H:] == [long[H - 1]] * 4  # analog extends flat past max_horizon
    assert len(f.forecast_band(H + 4)) == H + 4


# -- hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_no_nan_or_inf_on_adversarial_input(name: str) -> None:
    f = small(name)
    for y in adversarial_series():
        f.learn_one(y)
        assert_sane(f)
    assert_sane(f, H + 3)


@pytest.mark.parametrize("name", ALL)
def test_constant_series_is_forecast_as_constant(name: str) -> None:
    f = small(name)
    feed(f, [42.0] * (3 * SEASON))
    assert f.forecast(H) == pytest.approx([42.0] * H, rel=1e-3)
    lo, _, hi = f.forecast_band(1)[0]
    assert hi - lo == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf, 1e16])
def test_invalid_values_are_rejected_before_any_state_changes(name: str, bad: float) -> None:
    f = small(name)
    feed(f, seasonal_series(2))
    before = (f.forecast(H), f.forecast_band(H), f.steps, f.scored(1))
    with pytest.raises(ValueError):
        f.learn_one(bad)
    assert (f.forecast(H), f.forecast_band(H), f.steps, f.scored(1)) == before


def test_a_diverging_model_is_clamped_to_the_cap() -> None:
    class Wild(BaseForecaster):
        name = "wild"

        def _learn(self, y: float) -> None:
            pass

        def _predict(self, horizon: int) -> list[float]:
            return [math.inf, -5.0, 1e300, math.nan][:horizon] + [3.0] * (horizon - 4)

        def _reset_model(self) -> None:
            pass

    f = Wild(max_horizon=5)
    f.learn_one(10.0)
    assert f.forecast(5) == [10.0, 0.0, f.cap, 10.0, 3.0]
    assert f.restarts == 1 and f.statistics()["restarts"] == 1


def test_stabilised_snarimax_stays_bounded_where_rivers_default_diverges() -> None:
    rng = np.random.default_rng(3)
    ys = (40 + rng.poisson(5, 400)).astype(float)
    ys[50::37] *= 30  # flash crowds: x30 for one step, every 37 steps
    plain = time_series.SNARIMAX(p=12, d=1, q=0)
    ours = Snarimax(p=12, d=1, season_steps=SEASON, max_horizon=H)
    plain_max = ours_max = 0.0
    for y in ys.tolist():
        plain.learn_one(y)
        ours.learn_one(y)
        plain_max = max(plain_max, *(abs(v) for v in plain.forecast(H)))
        ours_max = max(ours_max, *ours.forecast(H))
    assert plain_max > 1e6  # what stabilisation is for: river's default SGD blows up on this series
    assert ours_max <= 4 * ys.max() + 1


# -- memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_memory_is_bounded(name: str) -> None:
    f = small(name)
    ys = seasonal_series(16)
    feed(f, ys[: 6 * SEASON])
    size_early = len(pickle.dumps(f))
    feed(f, ys[6 * SEASON :])
    size_late = len(pickle.dumps(f))
    assert size_late <= size_early * 1.05 + 256


# -- bands, determinism, protocol -----------------------------------------------------------------


def test_band_covers_about_its_nominal_share_on_noise() -> None:
    rng = np.random.default_rng(11)
    ys = (100 + rng.normal(0, 10, 1200)).tolist()
    f = HoltWinters(name="exp_smoothing", alpha=0.2, beta=None, gamma=None, max_horizon=3, band_window=256)
    inside = total = 0
    for i, y in enumerate(ys):
        if i >= 300:
            lo, _, hi = f.forecast_band(1)[0]
            inside += lo <= y <= hi
            total += 1
        f.learn_one(y)
    assert 0.84 <= inside / total <= 0.95


def test_default_forecasters_follow_the_protocol_and_are_deterministic() -> None:
    ys = seasonal_series(4, seed=5)
    a, b = default_selector(SEASON, max_horizon=H), default_selector(SEASON, max_horizon=H)
    assert all(isinstance(f, Forecaster) for f in [a, *a.children])
    for y in ys:
        a.learn_one(y)
        b.learn_one(y)
        assert a.forecast_band(H) == b.forecast_band(H)
    assert a.statistics() == b.statistics()
    assert [c.name for c in default_forecasters(SEASON)] == [*ALL, "combination"]


# -- selection ------------------------------------------------------------------------------------


def test_selector_picks_the_seasonal_model_on_a_seasonal_series() -> None:
    seasonal = seasonal_series(8)
    common = {"max_horizon": H, "error_halflife_steps": SEASON}
    naive, snaive = Naive(**common), SeasonalNaive(SEASON, **common)
    sel = Selector([naive, snaive], min_scored=SEASON, **common)
    for y in seasonal:
        sel.learn_one(y)
    assert snaive.rolling_mae(5) < 0.5 * naive.rolling_mae(5)
    assert sel.chosen(5) == "seasonal_naive"
    assert sel.beats_naive(5)
    assert sel.forecast(5)[4] == snaive.forecast(5)[4]


def test_selector_serves_naive_until_others_are_scored_and_when_nothing_beats_it() -> None:
    naive, snaive = Naive(max_horizon=H), SeasonalNaive(SEASON, max_horizon=H)
    sel = Selector([naive, snaive], max_horizon=H, min_scored=1000)
    for y in seasonal_series(3):
        sel.learn_one(y)
    assert sel.chosen(5) == "naive" and not sel.beats_naive(5)
    # A random walk: the last value is the best forecast, nothing beats naive.
    rng = np.random.default_rng(2)
    walk = np.maximum(1000 + np.cumsum(rng.normal(0, 20, 8 * SEASON)), 0).tolist()
    sel = Selector(
        [Naive(max_horizon=H), SeasonalNaive(SEASON, max_horizon=H)], max_horizon=H, min_scored=SEASON
    )
    for y in walk:
        sel.learn_one(y)
    assert sel.chosen(1) == "naive" and not sel.beats_naive(1)


def test_selector_needs_a_naive_baseline_and_unique_names() -> None:
    with pytest.raises(ValueError, match="naive"):
        Selector([SeasonalNaive(SEASON)])
    with pytest.raises(ValueError, match="unique"):
        Selector([Naive(), Naive()])


def test_selected_forecast_beats_naive_on_a_clearly_seasonal_trace() -> None:
    """A small prequential evaluation, like ``bench forecast`` on a synthetic trace."""
    ys = seasonal_series(10, seed=21, noise=4.0)
    sel = default_selector(SEASON, max_horizon=H)
    served: list[list[float]] = []
    naive: list[float] = []
    for y in ys:
        sel.learn_one(y)
        served.append(sel.forecast(H))
        naive.append(y)
    h, warm = 5, 3 * SEASON
    idx = range(warm, len(ys) - h)
    mae_sel = np.mean([abs(ys[t + h] - served[t][h - 1]) for t in idx])
    mae_naive = np.mean([abs(ys[t + h] - naive[t]) for t in idx])
    assert mae_sel < 0.5 * mae_naive
    assert sel.beats_naive(h)
