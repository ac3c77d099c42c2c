"""Seasonal naive forecaster: step ``t + h`` equals step ``t + h - season`` (the same time one season ago).

Until a whole season has been seen it falls back to the last value.  Memory: one season of floats.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from model.learn.forecasters.base import BaseForecaster


class SeasonalNaive(BaseForecaster):
    name = "seasonal_naive"

    def __init__(self, season_steps: int, **kwargs: Any) -> None:
        if season_steps < 1:
            raise ValueError("season_steps must be >= 1")
        super().__init__(**kwargs)
        self.season_steps = season_steps
        self._hist: deque[float] = deque(maxlen=season_steps)

    def _learn(self, y: float) -> None:
        self._hist.append(y)

    def _predict(self, horizon: int) -> list[float]:
        s = self.season_steps
        if len(self._hist) < s:
            return [self._hist[-1]] * horizon
        # _hist[0] is the value one season before the next step; further steps wrap around the season.
        return [self._hist[h % s] for h in range(horizon)]

    def _reset_model(self) -> None:
        self._hist.clear()

    def _extra_statistics(self) -> dict[str, Any]:
        return {"season_steps": self.season_steps}
