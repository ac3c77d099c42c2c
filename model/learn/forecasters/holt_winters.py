"""Holt-Winters (additive) exponential smoothing, river's ``time_series.HoltWinters`` underneath.

Two configurations are used by default (see ``model.learn.forecasters.default_forecasters``):

- ``holt_winters``: level, trend and a daily season (``season_steps``);
- ``exp_smoothing``: level only (simple exponential smoothing, Brown 1956), which the smoothing of
  noisy per-step counts makes a strong competitor of the naive forecast (docs/models.md has numbers).

Initialisation: like river, we wait for ``max(2, seasonality)`` values, then set the level to their
mean and the trend to their mean difference.  River's own initialiser also sets the additive season
to ``y / level`` (the multiplicative formula: the wrong scale, and a ZeroDivisionError when the first
season is all zeros, as on a proxy that starts idle), so we initialise the components ourselves and
start the season flat (all zeros), letting ``gamma`` learn it: one day of history is a poor estimate
of a daily profile on bursty traffic (on the NASA trace, 5-minute steps, a profile from day one made
forecasts five steps ahead 7% worse than a flat start).  Until then the forecast is the last value.
"""

from __future__ import annotations

from typing import Any

from river import time_series

from model.learn.forecasters.base import BaseForecaster


class HoltWinters(BaseForecaster):
    def __init__(
        self,
        *,
        name: str = "holt_winters",
        alpha: float = 0.3,
        beta: float | None = 0.01,
        gamma: float | None = 0.1,
        season_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if season_steps and (beta is None or gamma is None):
            raise ValueError("a seasonal Holt-Winters needs beta and gamma")
        self.name = name
        self.alpha = alpha
        self.beta = beta or None
        self.gamma = gamma if season_steps else None
        self.season_steps = season_steps
        self._model = self._new_model()
        self._ready = False
        self._first: list[float] = []  # the first season, until the components are initialised

    def _new_model(self) -> time_series.HoltWinters:
        return time_series.HoltWinters(
            alpha=self.alpha, beta=self.beta, gamma=self.gamma, seasonality=self.season_steps
        )

    def _learn(self, y: float) -> None:
        if self._ready:
            self._model.learn_one(y)
            return
        # We initialise river's components ourselves (same level and trend as river, flat season):
        # river's own initialiser divides by the level, which fails on an all-zero first season.
        first = self._first
        first.append(y)
        if len(first) < max(2, self.season_steps):
            return
        m = self._model
        m.level.append(sum(first) / len(first))
        if m.trend is not None:
            m.trend.append((first[-1] - first[0]) / (len(first) - 1))
        if m.season is not None:
            m.season.extend([0.0] * len(first))
        m._initialized = True
        self._ready = True
        first.clear()

    def _predict(self, horizon: int) -> list[float]:
        if not self._ready:
            return [self._last] * horizon
        return self._model.forecast(horizon)

    def _reset_model(self) -> None:
        self._model = self._new_model()
        self._ready = False
        self._first.clear()

    def _extra_statistics(self) -> dict[str, Any]:
        m = self._model
        out: dict[str, Any] = {"ready": self._ready, "season_steps": self.season_steps}
        if self._ready:
            out["level"] = float(m.level[-1])
            if m.trend is not None:
                out["trend"] = float(m.trend[-1])
        return out
