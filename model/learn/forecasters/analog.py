"""Analog forecaster: the future of the most similar recent pasts (nearest neighbours on the shape).

Flash crowds on a proxy have a shape: a jump, a plateau of a few minutes, a decay back to the
baseline.  Linear models cannot represent "a burst that started 4 minutes ago ends soon" (a burst
that just started and one about to end look the same to a weighted sum of the last values), so after
a jump they keep forecasting the jump; the naive forecast does too.  The method of analogues
(Lorenz 1969; nearest-neighbour time-series prediction, Yakowitz 1987, Farmer & Sidorowich 1987)
instead looks up how similar situations continued:

- the *situation* at step t is the last ``pattern_steps`` values as log ratios to a robust baseline
  (``log1p(y) - log1p(median of the last baseline_steps values)``): scale-free, so a burst at night
  and one at noon match, and the baseline median ignores the bursts themselves;
- the *continuation* is the log ratios of the next ``max_horizon`` values to the same baseline;
- at forecast time the ``neighbours`` stored situations closest (Euclidean) to the current one vote:
  per horizon the **median** of their continuations (the median because MAE is what we judge, and a
  few odd neighbours cannot drag it), mapped back with ``expm1(baseline + median)``.

Memory is a ring of ``memory`` situations (3,000 by default: two days of minutes), i.e. a fixed
``memory x (pattern_steps + max_horizon)`` float array; a forecast is one vectorised distance
computation over it and a partial sort.  Forecasts past ``max_horizon`` are extended flat.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from model.learn.forecasters.base import BaseForecaster

MAX_LOG = 30.0  # expm1(30) ~ 1e13: beyond any count; keeps expm1 finite before the cap applies


class Analog(BaseForecaster):
    name = "analog"

    def __init__(
        self,
        *,
        pattern_steps: int = 5,
        baseline_steps: int = 60,
        memory: int = 3000,
        neighbours: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if pattern_steps < 1 or baseline_steps < 1 or neighbours < 1 or memory <= neighbours:
            raise ValueError("need pattern_steps, baseline_steps, neighbours >= 1 and memory > neighbours")
        self.pattern_steps = pattern_steps
        self.baseline_steps = baseline_steps
        self.memory = memory
        self.neighbours = neighbours
        h = self.max_horizon
        self._situations = np.zeros((memory, pattern_steps))
        self._continuations = np.zeros((memory, h))
        self._stored = 0  # situations written so far (the ring index is _stored % memory)
        self._window: deque[float] = deque(maxlen=baseline_steps)
        self._logs: deque[float] = deque(maxlen=max(pattern_steps, h))
        # Situations waiting for their continuation: (situation or None, baseline) per past step.
        self._waiting: deque[tuple[np.ndarray | None, float]] = deque(maxlen=h + 1)
        self._current: tuple[np.ndarray | None, float] = (None, 0.0)

    def _learn(self, y: float) -> None:
        self._window.append(y)
        z = math.log1p(y)
        self._logs.append(z)
        base = math.log1p(float(np.median(self._window)))
        logs = self._logs
        n = len(logs)
        situation = None
        if n >= self.pattern_steps:
            situation = np.array([logs[n - 1 - j] for j in range(self.pattern_steps)]) - base
        self._current = (situation, base)
        self._waiting.append(self._current)
        h = self.max_horizon
        if len(self._waiting) == h + 1:
            # The oldest waiting situation now has all its h successors in _logs.
            old_situation, old_base = self._waiting[0]
            if old_situation is not None:
                i = self._stored % self.memory
                self._situations[i] = old_situation
                self._continuations[i] = np.fromiter((logs[n - h + j] for j in range(h)), float, h) - old_base
                self._stored += 1

    def _predict(self, horizon: int) -> list[float]:
        situation, base = self._current
        filled = min(self._stored, self.memory)
        if situation is None or filled <= self.neighbours:
            return [self._last] * horizon
        diff = self._situations[:filled] - situation
        dist = np.einsum("ij,ij->i", diff, diff)
        nearest = np.argpartition(dist, self.neighbours)[: self.neighbours]
        ratios = np.median(self._continuations[nearest], axis=0)
        values = np.expm1(np.minimum(base + ratios, MAX_LOG))
        out = values[:horizon].tolist()
        return out + [out[-1]] * (horizon - len(out))

    def _reset_model(self) -> None:
        self._stored = 0
        self._window.clear()
        self._logs.clear()
        self._waiting.clear()
        self._current = (None, 0.0)

    def _extra_statistics(self) -> dict[str, Any]:
        return {"situations": min(self._stored, self.memory), "memory": self.memory}
