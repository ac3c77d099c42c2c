"""``Learner``: the aggregate forecasting the learner process runs, behind one small facade.

The learner process sums the proxy's per-tick message counts into steps (``step_s``, a minute by
default) and calls ``observe_aggregate(step_start_ts, value)`` once per completed step; the admin API
asks ``forecast(horizon)`` and ``statistics()`` as often as it likes (both are cached per step).

Steps must arrive in order, one per ``step_s``:

- a step at or before the previous one is rejected (``Observed.REJECTED_OUT_OF_ORDER``);
- a negative or non-finite value is rejected (``Observed.REJECTED_VALUE``); the models never see it;
- a gap of up to ``max_gap_steps`` missing steps (the learner was restarted, say) is filled, so the
  seasonal models stay aligned with the clock: each missing step gets the value one season earlier
  when known, else the last value.  Imputed steps are learned but score no forecast, so they cannot
  make a model look better or worse (``Observed.LEARNED_AFTER_GAP``);
- a longer gap resets every model and its error record (``Observed.LEARNED_AFTER_RESET``): a state
  that old describes another time, and the naive forecast serves until the others are scored again.

``bench forecast`` drives this same class over the real traces, so the numbers it reports are those
of the code path the proxy runs.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from model.learn.forecasters import DEFAULT_MAX_HORIZON, Selector, default_selector


class Observed(enum.Enum):
    LEARNED = "learned"
    LEARNED_AFTER_GAP = "learned_after_gap"
    LEARNED_AFTER_RESET = "learned_after_reset"
    REJECTED_VALUE = "rejected_value"
    REJECTED_OUT_OF_ORDER = "rejected_out_of_order"

    @property
    def accepted(self) -> bool:
        return self.name.startswith("LEARNED")


@dataclass(frozen=True, slots=True)
class Forecast:
    """The served forecast: ``points`` are ``(step_start_ts, lo, mid, hi)`` for the next steps.

    ``model_name`` and ``beats_naive`` describe the longest horizon asked for (the one a scaler with
    that lead time acts on); ``models`` and ``beats_naive_at`` give them per horizon.
    """

    model_name: str
    beats_naive: bool
    points: tuple[tuple[float, float, float, float], ...]
    step_s: float
    models: tuple[str, ...] = ()
    beats_naive_at: tuple[bool, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "beats_naive": self.beats_naive,
            "step_s": self.step_s,
            "points": [list(p) for p in self.points],
            "models": list(self.models),
            "beats_naive_at": list(self.beats_naive_at),
        }


class Learner:
    """Online forecasting of the aggregate series (one value per ``step_s``) with a selector of models."""

    def __init__(
        self,
        step_s: float,
        season_steps: int,
        seed: int = 0,
        *,
        max_horizon: int = DEFAULT_MAX_HORIZON,
        max_gap_steps: int | None = None,
        selector: Selector | None = None,
    ) -> None:
        if not step_s > 0:
            raise ValueError("step_s must be > 0")
        if season_steps < 2:
            raise ValueError("season_steps must be >= 2")
        self.step_s = float(step_s)
        self.season_steps = season_steps
        # The models are deterministic functions of the series (no random initialisation, no sampling);
        # the seed is recorded so runs can be matched with the connection model's.
        self.seed = seed
        self.max_gap_steps = season_steps if max_gap_steps is None else max_gap_steps
        self.selector = (
            selector if selector is not None else default_selector(season_steps, max_horizon=max_horizon)
        )
        self._recent: deque[float] = deque(maxlen=season_steps)  # for imputing gaps
        self._last_ts: float | None = None
        self._cache: Forecast | None = None
        self.steps_learned = 0
        self.steps_imputed = 0
        self.resets = 0
        self.rejected_values = 0
        self.rejected_out_of_order = 0

    @property
    def max_horizon(self) -> int:
        return self.selector.max_horizon

    def observe_aggregate(self, ts: float, value: float) -> Observed:
        """Learn the value of the step starting at ``ts`` (seconds since the epoch)."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0.0:
            self.rejected_values += 1
            return Observed.REJECTED_VALUE
        if not math.isfinite(ts):
            self.rejected_out_of_order += 1
            return Observed.REJECTED_OUT_OF_ORDER
        result = Observed.LEARNED
        if self._last_ts is not None:
            ahead = round((ts - self._last_ts) / self.step_s)
            if ahead < 1:
                self.rejected_out_of_order += 1
                return Observed.REJECTED_OUT_OF_ORDER
            missing = ahead - 1
            if missing > self.max_gap_steps:
                self.selector.reset()
                self._recent.clear()
                self.resets += 1
                result = Observed.LEARNED_AFTER_RESET
            elif missing:
                for _ in range(missing):
                    self._learn(self._imputed_value(), imputed=True)
                self.steps_imputed += missing
                result = Observed.LEARNED_AFTER_GAP
        self._learn(v, imputed=False)
        self.steps_learned += 1
        self._last_ts = ts
        return result

    def _imputed_value(self) -> float:
        if len(self._recent) == self.season_steps:
            return self._recent[0]  # the value one season before the missing step
        return self._recent[-1] if self._recent else 0.0

    def _learn(self, v: float, *, imputed: bool) -> None:
        self.selector.learn_one(v, imputed=imputed)
        self._recent.append(v)
        self._cache = None

    def forecast(self, horizon: int) -> Forecast:
        """The next ``horizon`` steps after the last observed one, with the error band."""
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        cached = self._cache
        if cached is not None and len(cached.points) == horizon:
            return cached
        sel = self.selector
        hs = range(1, horizon + 1)
        if self._last_ts is None:
            points: tuple[tuple[float, float, float, float], ...] = ()
        else:
            base = self._last_ts
            points = tuple(
                (base + h * self.step_s, lo, mid, hi)
                for h, (lo, mid, hi) in zip(hs, sel.forecast_band(horizon), strict=True)
            )
        fc = Forecast(
            model_name=sel.chosen(horizon),
            beats_naive=sel.beats_naive(horizon),
            points=points,
            step_s=self.step_s,
            models=tuple(sel.chosen(h) for h in hs),
            beats_naive_at=tuple(sel.beats_naive(h) for h in hs),
        )
        self._cache = fc
        return fc

    def statistics(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``GET /forecast`` and ``GET /scores``."""
        return {
            "step_s": self.step_s,
            "season_steps": self.season_steps,
            "max_horizon": self.max_horizon,
            "seed": self.seed,
            "last_step_ts": self._last_ts,
            "steps_learned": self.steps_learned,
            "steps_imputed": self.steps_imputed,
            "resets": self.resets,
            "rejected_values": self.rejected_values,
            "rejected_out_of_order": self.rejected_out_of_order,
            "selector": self.selector.statistics(),
        }
