"""Combination: per horizon, the inverse-MAE weighted mean of the ``top_k`` best other forecasters.

Combining forecasts usually beats the best single one (Bates & Granger 1969; the M4 competition's
leaders were combinations): different models make partly independent errors, and a weighted mean
averages some of them away.  Here, after every step and for every horizon ``h``:

1. each member's rolling MAE at ``h`` is read (the exponentially weighted MAE its own
   ``ErrorTracker`` keeps, the one the selector compares); members with fewer than ``min_scored``
   scored forecasts at ``h`` are left out;
2. the ``top_k`` members with the lowest MAE are kept (ties: the earlier member), and weighted by
   ``1 / MAE`` normalised to sum to 1 (a member with a zero MAE gets ``1 / MIN_MAE``, i.e.
   practically all the weight);
3. the forecast ``h`` steps ahead is the weighted mean of the kept members' forecasts ``h`` steps
   ahead.  Before any member qualifies, all members are weighted equally.

Weights come only from errors already scored, so the combination is as online as its members (no
tuning on the future).  With ``top_k = 2`` (the default) the combination leaves out the members
that are far behind: on the real traces an equal-weight mean of all forecasters is worse than the
best single one (the smoothers are far worse than naive on the Twitter bursts, naive and seasonal
naive far worse than the smoothers on the NASA noise), and top 2 did better than top 3 or 4
(docs/models.md has the numbers).

The combination's own forecasts are scored like any forecaster's, so the selector serves it only
where it actually beats its members.  The members are not learned here: whoever feeds the
combination must feed its members first, with the same values (the ``Selector`` learns its
forecasters in order and checks that a combination comes after its members).  A weighted mean of
clamped forecasts is within ``[0, max cap]``, and the base clamps it again.

Memory: ``max_horizon x members`` indices and weights.  Cost: a few vectorised operations per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model.learn.forecasters.base import BaseForecaster

#: Floor of a member's MAE when turned into a weight (a perfect member takes practically all of it).
MIN_MAE = 1e-12


class Combination(BaseForecaster):
    name = "combination"

    def __init__(
        self,
        members: Sequence[BaseForecaster],
        *,
        top_k: int = 2,
        min_scored: int = 24,
        name: str = "combination",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not members:
            raise ValueError("a combination needs at least one member")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique: {names}")
        if name in names:
            raise ValueError("a combination cannot be its own member")
        if any(m.max_horizon != self.max_horizon for m in members):
            raise ValueError("all members must track the same max_horizon as the combination")
        if top_k < 1 or min_scored < 0:
            raise ValueError("need top_k >= 1 and min_scored >= 0")
        self.name = name
        self.members = list(members)
        self.top_k = min(top_k, len(self.members))
        self.min_scored = min_scored
        self._ranked = self._equal_weights()

    def _equal_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(members in order of rank, their weights) per horizon: every member, equally."""
        k, h = len(self.members), self.max_horizon
        return np.tile(np.arange(k), (h, 1)), np.full((h, k), 1.0 / k)

    def weights(self) -> np.ndarray:
        """``(max_horizon, members)`` weights of the last forecast; each row sums to 1."""
        ranked, w = self._ranked
        out = np.zeros((self.max_horizon, len(self.members)))
        np.put_along_axis(out, ranked, w, axis=1)
        return out

    def _learn(self, y: float) -> None:
        mae = np.array([m.rolling_maes() for m in self.members]).T  # (max_horizon, members)
        counts = np.array([m.scored_counts() for m in self.members]).T
        key = np.where((counts >= self.min_scored) & np.isfinite(mae), mae, np.inf)
        ranked = np.argsort(key, axis=1, kind="stable")  # lowest MAE first; ties: the earlier member
        w = 1.0 / np.maximum(np.sort(key, axis=1), MIN_MAE)  # in rank order; 0 where not qualified
        w[:, self.top_k :] = 0.0
        total = w.sum(axis=1, keepdims=True)
        if (total > 0.0).all():
            w /= total
        else:  # a horizon where no member qualifies yet weights every member equally
            w = np.where(total > 0.0, w / np.where(total > 0.0, total, 1.0), 1.0 / len(self.members))
        self._ranked = (ranked, w)

    def _predict(self, horizon: int) -> list[float]:
        forecasts = np.array([m.forecast(horizon) for m in self.members])  # (members, horizon)
        ranked, w = self._ranked
        if horizon > self.max_horizon:  # past the tracked horizons: the longest one's weights
            extra = horizon - self.max_horizon
            ranked = np.vstack([ranked, np.repeat(ranked[-1:], extra, axis=0)])
            w = np.vstack([w, np.repeat(w[-1:], extra, axis=0)])
        cols = np.arange(horizon)[:, None]
        return (forecasts[ranked[:horizon], cols] * w[:horizon]).sum(axis=1).tolist()

    def _reset_model(self) -> None:
        self._ranked = self._equal_weights()

    def _extra_statistics(self) -> dict[str, Any]:
        names = [m.name for m in self.members]
        return {
            "top_k": self.top_k,
            "members": names,
            "weights": [
                {n: round(float(w), 6) for n, w in zip(names, row, strict=True) if w > 0.0}
                for row in self.weights()
            ],
        }
