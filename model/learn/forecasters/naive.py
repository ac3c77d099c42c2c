"""Naive forecaster: every future step equals the last observed one.

The baseline every other forecaster must beat; it is also what a reactive scaler implicitly assumes
(the load stays as it is now), so ``Selector`` reports whether anything beats it.
"""

from __future__ import annotations

from typing import Any

from model.learn.forecasters.base import BaseForecaster


class Naive(BaseForecaster):
    name = "naive"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._y = 0.0

    def _learn(self, y: float) -> None:
        self._y = y

    def _predict(self, horizon: int) -> list[float]:
        return [self._y] * horizon

    def _reset_model(self) -> None:
        self._y = 0.0
