"""The combination forecaster and profile smoothing: values computed by hand, safety on hostile
input, bounded memory, determinism, and their place in the selector."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest

from model.learn.forecasters import (
    Analog,
    BaseForecaster,
    Combination,
    HoltWinters,
    Naive,
    ProfileSmoothing,
    Selector,
)
from tests.model.learn.synthetic import SEASON, adversarial_series, seasonal_series

H = 6


class Const(BaseForecaster):
    """Forecasts the same value at every horizon: its errors on a constant series are exact."""

    def __init__(self, name: str, value: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.value = value

    def _learn(self, y: float) -> None:
        pass

    def _predict(self, horizon: int) -> list[float]:
        return [self.value] * horizon

    def _reset_model(self) -> None:
        pass


def consts(**kwargs: Any) -> list[BaseForecaster]:
    # On a series that is always 12 the MAEs are exactly 2, 4 and 28 at every horizon.
    return [Const("a", 10.0, **kwargs), Const("b", 16.0, **kwargs), Const("c", 40.0, **kwargs)]


def feed_all(forecasters: list[BaseForecaster], ys: list[float]) -> None:
    """Members first, then the combination (what the selector does)."""
    for y in ys:
        for f in forecasters:
            f.learn_one(y)


def assert_sane(f: BaseForecaster, horizon: int = H) -> None:
    values = f.forecast(horizon)
    band = f.forecast_band(horizon)
    assert len(values) == horizon and len(band) == horizon
    for v, (lo, mid, hi) in zip(values, band, strict=True):
        assert math.isfinite(v) and 0.0 <= v <= f.cap
        assert all(math.isfinite(x) for x in (lo, mid, hi))
        assert 0.0 <= lo <= mid <= hi


# -- combination: values by hand ------------------------------------------------------------------


def test_combination_weights_the_top_k_by_inverse_mae() -> None:
    members = consts(max_horizon=H)
    comb = Combination(members, top_k=2, min_scored=3, max_horizon=H)
    feed_all([*members, comb], [12.0] * 20)
    assert [m.rolling_mae(1) for m in members] == [2.0, 4.0, 28.0]
    # Weights 1/2 and 1/4, normalised: 2/3 and 1/3; "c" is third and left out.
    assert comb.weights() == pytest.approx(np.tile([2 / 3, 1 / 3, 0.0], (H, 1)))
    assert comb.forecast(H) == pytest.approx([2 / 3 * 10.0 + 1 / 3 * 16.0] * H)  # = 12.0
    assert comb.forecast(H)[0] == pytest.approx(12.0)
    assert comb.statistics()["weights"][0] == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    # Past the tracked horizons the longest one's weights apply.
    assert comb.forecast(H + 3) == pytest.approx([12.0] * (H + 3))


def test_combination_of_three_and_equal_weights_before_scoring() -> None:
    members = consts(max_horizon=H)
    comb = Combination(members, top_k=3, min_scored=10, max_horizon=H)
    feed_all([*members, comb], [12.0] * 5)
    # Nobody has 10 scored forecasts yet: the plain mean.
    assert comb.forecast(H) == pytest.approx([(10.0 + 16.0 + 40.0) / 3] * H)
    assert comb.weights() == pytest.approx(np.full((H, 3), 1 / 3))
    feed_all([*members, comb], [12.0] * 20)
    inv = np.array([1 / 2, 1 / 4, 1 / 28])
    w = inv / inv.sum()  # 0.636..., 0.318..., 0.045...
    assert comb.weights()[0] == pytest.approx(w)
    assert comb.forecast(1)[0] == pytest.approx(float(w @ [10.0, 16.0, 40.0]))  # 13.27...


def test_combination_horizons_qualify_separately() -> None:
    """Horizon h is scored h steps later: right after min_scored steps only the short ones qualify."""
    members = consts(max_horizon=H)
    comb = Combination(members, top_k=1, min_scored=4, max_horizon=H)
    feed_all([*members, comb], [12.0] * 6)  # horizon h has 6 - h scored forecasts
    fc = comb.forecast(H)
    assert fc[:2] == pytest.approx([10.0, 10.0])  # h1, h2: 5 and 4 scored, "a" alone
    assert fc[2:] == pytest.approx([22.0] * (H - 2))  # h3..h6: not enough yet, the plain mean


def test_a_perfect_member_takes_the_weight() -> None:
    members = [Const("exact", 12.0, max_horizon=H), Const("off", 20.0, max_horizon=H)]
    comb = Combination(members, top_k=2, min_scored=1, max_horizon=H)
    feed_all([*members, comb], [12.0] * 10)
    assert members[0].rolling_mae(1) == 0.0
    assert comb.forecast(H) == pytest.approx([12.0] * H)
    assert all(math.isfinite(x) for x in comb.weights().ravel())


def test_combination_rejects_bad_members() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Combination([])
    with pytest.raises(ValueError, match="unique"):
        Combination([Naive(), Naive()])
    with pytest.raises(ValueError, match="own member"):
        Combination([Naive(), Const("combination", 1.0)])
    with pytest.raises(ValueError, match="max_horizon"):
        Combination([Naive(max_horizon=3)], max_horizon=4)
    with pytest.raises(ValueError, match="top_k"):
        Combination([Naive()], top_k=0)


def test_selector_needs_a_combination_after_its_members() -> None:
    naive, other = Naive(max_horizon=H), Const("other", 5.0, max_horizon=H)
    comb = Combination([naive, other], max_horizon=H)
    Selector([naive, other, comb], max_horizon=H)
    with pytest.raises(ValueError, match="after its members"):
        Selector([naive, comb, other], max_horizon=H)
    with pytest.raises(ValueError, match="after its members"):
        Selector([naive, comb], max_horizon=H)  # a member that the selector does not run


def test_selector_serves_the_combination_where_it_is_best() -> None:
    common: dict[str, Any] = {"max_horizon": H, "error_halflife_steps": 4}
    members = consts(**common)
    naive = Naive(**common)
    comb = Combination(members, top_k=2, min_scored=3, **common)
    sel = Selector([naive, *members, comb], min_scored=3, **common)
    # 11, 13, 11, ...: "a" is off by 2 on average, "b" by 4, naive by 2; the combination, about
    # 2/3 x 10 + 1/3 x 16 = 12, by about 1.
    for y in [11.0, 13.0] * 40:
        sel.learn_one(y)
    assert comb.rolling_mae(1) == pytest.approx(1.0, abs=0.1)
    assert comb.rolling_mae(1) < 0.6 * min(m.rolling_mae(1) for m in [naive, *members])
    assert sel.chosen(1) == "combination" and sel.beats_naive(1)
    assert sel.forecast(1) == pytest.approx(comb.forecast(1))


# -- combination: safety, memory, determinism -----------------------------------------------------


def small_selector() -> Selector:
    common: dict[str, Any] = {
        "max_horizon": H,
        "error_halflife_steps": SEASON,
        "cap_halflife_steps": SEASON,
        "band_window": 64,
    }
    singles: list[BaseForecaster] = [
        Naive(**common),
        HoltWinters(name="exp_smoothing", alpha=0.3, beta=None, gamma=None, **common),
        ProfileSmoothing(SEASON, window_steps=2, **common),
        Analog(pattern_steps=3, baseline_steps=12, memory=80, neighbours=5, **common),
    ]
    comb = Combination(singles, top_k=2, min_scored=5, **common)
    return Selector([*singles, comb], min_scored=5, **common)


def test_combination_is_finite_and_bounded_on_adversarial_input() -> None:
    sel = small_selector()
    comb = sel.child("combination")
    assert isinstance(comb, Combination)
    for y in adversarial_series():
        sel.learn_one(y)
        assert_sane(comb)
        assert_sane(comb, H + 3)
        assert_sane(sel)
        assert np.allclose(comb.weights().sum(axis=1), 1.0)
    assert comb.restarts == 0


def test_combination_memory_is_bounded_and_output_deterministic() -> None:
    a, b = small_selector(), small_selector()
    ys = seasonal_series(16, seed=9)
    for y in ys[: 6 * SEASON]:
        a.learn_one(y)
        b.learn_one(y)
    size_early = len(pickle.dumps(a.child("combination")))
    for y in ys[6 * SEASON :]:
        a.learn_one(y)
        b.learn_one(y)
        assert a.child("combination").forecast(H) == b.child("combination").forecast(H)
    assert len(pickle.dumps(a.child("combination"))) <= size_early * 1.05 + 256
    assert a.statistics() == b.statistics()
    a.reset()
    comb = a.child("combination")
    assert isinstance(comb, Combination)
    assert comb.weights() == pytest.approx(np.full((H, 4), 0.25))


# -- profile smoothing ----------------------------------------------------------------------------


def test_profile_smoothing_by_hand() -> None:
    # Season 4, a 3-value centred window; alpha 1 and day_weight 1 keep only the newest ratio and mean.
    f = ProfileSmoothing(4, window_steps=1, alpha=1.0, day_weight=1.0, offset=1.0, max_horizon=H)
    for y in [2.0, 4.0, 6.0, 4.0]:
        f.learn_one(y)
    assert f.forecast(3) == [4.0, 4.0, 4.0]  # no profile for the current slot yet: the smoothed level
    for y in [2.0, 4.0, 6.0, 4.0]:
        f.learn_one(y)
    # Centred means: slot 0 (4+2+4)/3, slot 1 (2+4+6)/3, slot 2 (4+6+4)/3, slot 3 (6+4+2)/3; the last
    # step (4, slot 3) is on its profile, ratio (4+1)/(4+1) = 1: the forecast is the profile.
    assert f.forecast(H) == pytest.approx([10 / 3, 4.0, 14 / 3, 4.0, 10 / 3, 4.0])
    f.learn_one(10.0)  # slot 0; slot 3's mean becomes (6+4+10)/3
    r = (10.0 + 1.0) / (10 / 3 + 1.0)  # 33/13
    expected = [r * (p + 1.0) - 1.0 for p in (4.0, 14 / 3, 20 / 3, 10 / 3)]
    assert f.forecast(4) == pytest.approx(expected)  # 152/13, 174/13, 240/13, 10
    assert f.statistics()["profile_slots_set"] == 4


def test_profile_smoothing_clips_the_ratio_after_an_idle_slot() -> None:
    f = ProfileSmoothing(4, window_steps=1, alpha=1.0, day_weight=1.0, max_horizon=2)
    for y in [0.0] * 8:
        f.learn_one(y)
    f.learn_one(1000.0)  # slot 0, profile 0: the raw ratio would be 1001
    assert f.statistics()["ratio"] == 4.0
    assert f.forecast(1) == [pytest.approx(4.0 * (0.0 + 1.0) - 1.0)]


def test_profile_smoothing_follows_the_daily_ramp_that_smoothing_lags() -> None:
    ys = seasonal_series(10, seed=4)
    prof = ProfileSmoothing(SEASON, window_steps=1, max_horizon=H, error_halflife_steps=SEASON)
    flat = HoltWinters(name="exp_smoothing", alpha=0.25, beta=None, gamma=None, max_horizon=H)
    for y in ys:
        prof.learn_one(y)
        flat.learn_one(y)
    assert prof.rolling_mae(5) < 0.5 * flat.rolling_mae(5)


def test_profile_smoothing_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="season"):
        ProfileSmoothing(1)
    with pytest.raises(ValueError, match="alpha"):
        ProfileSmoothing(24, alpha=0.0)
    with pytest.raises(ValueError, match="shorter than the season"):
        ProfileSmoothing(4, window_steps=2)
    assert ProfileSmoothing(1440).window_steps == 30  # a 48th of a day of minutes: +-30 minutes
    assert ProfileSmoothing(24).window_steps == 1
