"""Selector: runs every forecaster on every step and serves, per horizon, the one with the lowest
rolling error.

Every child learns every step (so a model that is behind today can take over tomorrow), and each
child's forecasts are scored by its own ``ErrorTracker`` against what happened: an exponentially
weighted MAE per horizon, with a half-life of a season by default (a day of steps).  For horizon h
the selector serves the child with the lowest such MAE among those with at least ``min_scored``
scored forecasts at h; before that, and on ties, the earliest child in the list wins, which is the
naive forecaster by construction.  Different horizons may be served by different children (on the
Twitter trace the naive forecast is best one minute ahead and the analog forecaster five minutes
ahead).  A ``Combination`` child (a weighted mean of other children) is one more candidate, listed
after its members so that they have learned the step when it combines their forecasts.

``beats_naive(h)`` says whether the served child's rolling MAE is lower than the naive forecaster's
by at least ``beat_margin`` (relative).  When it is not, the scaler falls back to reactive rules: a
forecast that does not beat "the load stays as it is" is no reason to act early.

The selector's band comes from the residuals of what it actually served, so its coverage is
measured on the output, switches included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model.learn.forecasters.base import BaseForecaster, Costs, _json_float


class Selector(BaseForecaster):
    name = "selector"

    def __init__(
        self,
        children: Sequence[BaseForecaster],
        *,
        naive_name: str = "naive",
        min_scored: int = 24,
        beat_margin: float = 0.02,
        **kwargs: Any,
    ) -> None:
        if not children:
            raise ValueError("a selector needs at least one forecaster")
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"forecaster names must be unique: {names}")
        if naive_name not in names:
            raise ValueError(f"the selector needs the {naive_name!r} baseline among its forecasters")
        super().__init__(**kwargs)
        for i, c in enumerate(children):
            if c.max_horizon != self.max_horizon:
                raise ValueError("all forecasters must track the same max_horizon as the selector")
            # A combination reads its members' forecasts, so they must have learned the step first.
            for m in getattr(c, "members", ()):
                if not any(m is earlier for earlier in children[:i]):
                    raise ValueError(f"{c.name!r} must come after its members among the forecasters")
        self.children = list(children)
        self.naive = self.children[names.index(naive_name)]
        self.min_scored = min_scored
        self.beat_margin = beat_margin
        self._chosen: list[BaseForecaster] = [self.naive] * self.max_horizon
        self._imputing = False

    def child(self, name: str) -> BaseForecaster:
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(name)

    def learn_one(self, y: float, *, imputed: bool = False) -> None:
        self._imputing = imputed
        try:
            super().learn_one(y, imputed=imputed)
        finally:
            self._imputing = False

    def _learn(self, y: float) -> None:
        for c in self.children:
            c.learn_one(y, imputed=self._imputing)
        # Per horizon the lowest rolling MAE among children scored at least min_scored times there;
        # argmin takes the first of equal ones (the earlier child), and naive serves where none qualifies.
        mae = np.array([c.rolling_maes() for c in self.children])  # (children, max_horizon)
        counts = np.array([c.scored_counts() for c in self.children])
        key = np.where((counts >= self.min_scored) & np.isfinite(mae), mae, np.inf)
        best = np.argmin(key, axis=0)
        qualified = np.isfinite(key.min(axis=0))
        children = self.children
        self._chosen = [
            children[i] if ok else self.naive for i, ok in zip(best.tolist(), qualified.tolist(), strict=True)
        ]

    def _predict(self, horizon: int) -> list[float]:
        out = [self._chosen[h].forecast(h + 1)[h] for h in range(min(horizon, self.max_horizon))]
        if horizon > self.max_horizon:
            out += self._chosen[-1].forecast(horizon)[self.max_horizon :]
        return out

    def chosen(self, horizon: int) -> str:
        """Name of the forecaster served ``horizon`` steps ahead."""
        return self._chosen[min(horizon, self.max_horizon) - 1].name

    def beats_naive(self, horizon: int) -> bool:
        h = min(horizon, self.max_horizon)
        best = self._chosen[h - 1]
        if best is self.naive or best.scored(h) < self.min_scored or self.naive.scored(h) < self.min_scored:
            return False
        return best.rolling_mae(h) < (1.0 - self.beat_margin) * self.naive.rolling_mae(h)

    def _reset_model(self) -> None:
        for c in self.children:
            c.reset()
        self._chosen = [self.naive] * self.max_horizon

    def child_costs(self) -> dict[str, Costs]:
        return {c.name: c.costs() for c in self.children}

    def _extra_statistics(self) -> dict[str, Any]:
        horizons = range(1, self.max_horizon + 1)
        return {
            "chosen": [self.chosen(h) for h in horizons],
            "beats_naive": [self.beats_naive(h) for h in horizons],
            "naive_rolling_mae": [_json_float(self.naive.rolling_mae(h)) for h in horizons],
            "forecasters": [c.statistics() for c in self.children],
        }
