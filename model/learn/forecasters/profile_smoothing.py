"""Profile smoothing: exponential smoothing of the ratio of the series to a smoothed daily profile.

Simple exponential smoothing forecasts a flat line at its level, and the level lags the series by
about ``(1 - alpha) / alpha`` steps.  On a daily ramp (NASA, mornings) the forecast five steps
ahead is then late by eight steps of the ramp.  Holt-Winters fixes that with an additive season, but
its season is estimated from single noisy values (one per slot and day), and on bursty per-step
counts that noise costs more than the ramp (docs/models.md).  This forecaster keeps the lag out of
the ramp with a profile that is smooth both in time of day and across days:

- **profile** ``p[slot]``, one value per step of the season: the mean of the ``2 * window_steps + 1``
  values centred on the slot (a moving average over about an hour by default), averaged across days
  with weight ``day_weight`` for the newest day (exponentially, 0.2: a half-life of about three
  days).  The centred mean of slot ``t - window_steps`` is known at step ``t``; a slot's first mean
  sets it.
- **ratio level** ``r``: simple exponential smoothing (``alpha``) of ``(y + offset) / (p[slot] +
  offset)``, each ratio clipped to ``[0, max_ratio]`` so that one step far above an almost idle slot
  (the end of an outage) cannot throw the level away; ``offset`` (one request) keeps the ratio finite
  where the profile is zero.
- **forecast** ``r * (p[slot of t + h] + offset) - offset``: the level carried along the profile.
  Until the current slot and the target slot have a profile value (the first day) the forecast is
  a plain exponentially smoothed level.

Memory: two arrays of one season (the profile and which slots are set) and a deque of the last
``2 * window_steps + 1`` values, fixed at construction.  The slots are counted from the first
step learned (steps come one per ``step_s``, gaps are filled by the ``Learner``, a long gap resets).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from model.learn.forecasters.base import CAP_FACTOR, BaseForecaster


class ProfileSmoothing(BaseForecaster):
    name = "profile_smoothing"

    def __init__(
        self,
        season_steps: int,
        *,
        alpha: float = 0.25,
        window_steps: int | None = None,
        day_weight: float = 0.2,
        offset: float = 1.0,
        max_ratio: float = CAP_FACTOR,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if season_steps < 2:
            raise ValueError("season_steps must be >= 2")
        if not 0.0 < alpha <= 1.0 or not 0.0 < day_weight <= 1.0:
            raise ValueError("alpha and day_weight must be in (0, 1]")
        if offset <= 0.0 or max_ratio <= 0.0:
            raise ValueError("offset and max_ratio must be > 0")
        self.season_steps = season_steps
        self.alpha = alpha
        # Default half-width: a 48th of the season (30 minutes of a day), at least one step.
        self.window_steps = max(1, season_steps // 48) if window_steps is None else max(1, window_steps)
        if 2 * self.window_steps + 1 > season_steps:
            raise ValueError("the profile window must be shorter than the season")
        self.day_weight = day_weight
        self.offset = offset
        self.max_ratio = max_ratio
        self._profile = np.zeros(season_steps)
        self._set = np.zeros(season_steps, dtype=bool)
        self._recent: deque[float] = deque(maxlen=2 * self.window_steps + 1)
        self._t = -1  # index of the last step learned (its slot is _t % season_steps)
        self._level = 0.0  # plain exponentially smoothed level
        self._ratio: float | None = None  # smoothed ratio to the profile, once the profile covers a step

    def _learn(self, y: float) -> None:
        self._t += 1
        t, s = self._t, self.season_steps
        self._level = y if t == 0 else self._level + self.alpha * (y - self._level)
        recent = self._recent
        recent.append(y)
        if len(recent) == recent.maxlen:  # the centred mean of slot t - window_steps is complete
            slot = (t - self.window_steps) % s
            mean = sum(recent) / len(recent)
            if self._set[slot]:
                self._profile[slot] += self.day_weight * (mean - self._profile[slot])
            else:
                self._profile[slot] = mean
                self._set[slot] = True
        slot = t % s
        if self._set[slot]:
            ratio = min((y + self.offset) / (self._profile[slot] + self.offset), self.max_ratio)
            r = self._ratio
            self._ratio = ratio if r is None else r + self.alpha * (ratio - r)

    def _predict(self, horizon: int) -> list[float]:
        r = self._ratio
        if r is None:
            return [self._level] * horizon
        s, t, c = self.season_steps, self._t, self.offset
        out = []
        for h in range(1, horizon + 1):
            slot = (t + h) % s
            out.append(r * (self._profile[slot] + c) - c if self._set[slot] else self._level)
        return out

    def _reset_model(self) -> None:
        self._profile[:] = 0.0
        self._set[:] = False
        self._recent.clear()
        self._t = -1
        self._level = 0.0
        self._ratio = None

    def _extra_statistics(self) -> dict[str, Any]:
        return {
            "season_steps": self.season_steps,
            "window_steps": self.window_steps,
            "profile_slots_set": int(self._set.sum()),
            "ratio": None if self._ratio is None else round(self._ratio, 6),
        }
