"""Forecasters of the aggregate series, one per file, sharing the ``Forecaster`` protocol in ``base``.

``default_forecasters`` is the set the learner runs and ``bench forecast`` judges; the ``Selector``
serves the best of them per horizon.
"""

from __future__ import annotations

from typing import Any

from model.learn.forecasters.analog import Analog
from model.learn.forecasters.base import DEFAULT_MAX_HORIZON, BaseForecaster, Forecaster, check_value
from model.learn.forecasters.combination import Combination
from model.learn.forecasters.holt_winters import HoltWinters
from model.learn.forecasters.naive import Naive
from model.learn.forecasters.profile_smoothing import ProfileSmoothing
from model.learn.forecasters.seasonal_naive import SeasonalNaive
from model.learn.forecasters.selector import Selector
from model.learn.forecasters.snarimax import Snarimax

__all__ = [
    "DEFAULT_MAX_HORIZON",
    "Analog",
    "BaseForecaster",
    "Combination",
    "Forecaster",
    "HoltWinters",
    "Naive",
    "ProfileSmoothing",
    "SeasonalNaive",
    "Selector",
    "Snarimax",
    "check_value",
    "default_forecasters",
    "default_selector",
]


def default_forecasters(season_steps: int, *, max_horizon: int = DEFAULT_MAX_HORIZON) -> list[BaseForecaster]:
    """The forecasters the learner runs, naive first (it wins ties and serves until others are scored)
    and the combination last (it combines the others' forecasts of the same step).

    Errors are averaged over a half-life of one season (a day of steps): long enough that one burst
    does not flip the choice, short enough to follow a change of traffic within days.
    """
    if season_steps < 2:
        raise ValueError("season_steps must be >= 2")
    common: dict[str, Any] = {
        "max_horizon": max_horizon,
        "error_halflife_steps": season_steps,
        "cap_halflife_steps": season_steps,
    }
    singles: list[BaseForecaster] = [
        Naive(**common),
        SeasonalNaive(season_steps, **common),
        HoltWinters(name="exp_smoothing", alpha=0.25, beta=None, gamma=None, season_steps=0, **common),
        HoltWinters(
            name="holt_winters", alpha=0.3, beta=0.01, gamma=0.1, season_steps=season_steps, **common
        ),
        ProfileSmoothing(season_steps, alpha=0.25, day_weight=0.2, **common),
        Snarimax(p=12, d=1, season_steps=season_steps, **common),
        Analog(**common),
    ]
    return [*singles, Combination(singles, top_k=2, min_scored=24, **common)]


def default_selector(season_steps: int, *, max_horizon: int = DEFAULT_MAX_HORIZON) -> Selector:
    common: dict[str, Any] = {
        "max_horizon": max_horizon,
        "error_halflife_steps": season_steps,
        "cap_halflife_steps": season_steps,
    }
    return Selector(default_forecasters(season_steps, max_horizon=max_horizon), **common)
