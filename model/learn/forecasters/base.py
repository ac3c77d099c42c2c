"""What every forecaster of the aggregate series offers, and the bookkeeping they all share.

Theory of operation
-------------------
The aggregate series is one non-negative value per step (messages per minute by default).  A
forecaster is fed each step once, in order, with ``learn_one(y)``; right after learning it computes its
forecast for the next ``max_horizon`` steps *once* and caches it, so ``forecast()`` and
``forecast_band()`` are cheap no matter how often the admin API or the scaler ask between two steps.

Because every forecast that was served is kept (``max_horizon`` of them, a fixed-size deque), the
next observations score it: the residual ``y - forecast`` of the forecast made ``h`` steps ago lands in
the residual window of horizon ``h``.  Two things come out of those windows:

- the **error band**: empirical quantiles of the recent residuals of each horizon, added to the point
  forecast (split-conformal style: no distributional assumption, calibrated on the model's own
  recent errors);
- the **rolling MAE** per horizon (exponentially weighted), which the selector compares.

Rules every forecaster keeps (tests check them):

- inputs are finite counts in ``[0, MAX_VALUE]``; anything else raises ``ValueError`` before any
  state changes;
- outputs are finite and within ``[0, cap]``, where ``cap`` is a multiple of a slowly decaying
  maximum of what was observed: a model that diverges cannot serve an absurd value, and a model
  whose forecast is not finite is restarted from scratch (``restarts`` in its statistics);
- memory is bounded: every history is a fixed-size deque or array sized at construction.
"""

from __future__ import annotations

import abc
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Default longest horizon a forecaster tracks errors for (12 steps: an hour at 5-minute steps).
DEFAULT_MAX_HORIZON = 12
#: Residuals kept per horizon for the band quantiles.
DEFAULT_BAND_WINDOW = 512
#: Central coverage the band aims at (0.9: the 5th and 95th percentiles of recent residuals).
DEFAULT_BAND_COVERAGE = 0.9
#: Forecasts are clamped to CAP_FACTOR x the decaying maximum of the observations.
CAP_FACTOR = 4.0
#: Largest value accepted per step: far beyond any proxy, small enough that squares stay finite.
MAX_VALUE = 1e15


@runtime_checkable
class Forecaster(Protocol):
    """An online forecaster of a non-negative series with one value per step."""

    name: str
    max_horizon: int

    def learn_one(self, y: float, *, imputed: bool = False) -> None:
        """Learn the next value; ``imputed`` values are learned but never score past forecasts."""

    def forecast(self, horizon: int) -> list[float]:
        """Point forecasts for the next ``horizon`` steps: finite, >= 0."""

    def forecast_band(self, horizon: int) -> list[tuple[float, float, float]]:
        """``(lo, mid, hi)`` for the next ``horizon`` steps; ``lo <= mid <= hi``, all >= 0."""

    def rolling_mae(self, horizon: int) -> float:
        """Exponentially weighted MAE of this forecaster's forecasts ``horizon`` steps ahead (nan: none yet)."""

    def scored(self, horizon: int) -> int:
        """How many forecasts ``horizon`` steps ahead have been scored so far."""

    def statistics(self) -> dict[str, Any]:
        """A JSON-able snapshot."""


def check_value(y: float) -> float:
    """``y`` as a float if it is a count in ``[0, MAX_VALUE]``; ``ValueError`` otherwise."""
    v = float(y)
    if not 0.0 <= v <= MAX_VALUE:  # nan fails the comparison too
        raise ValueError(f"series values must be finite, >= 0 and <= {MAX_VALUE:g}, got {y!r}")
    return v


def halflife_to_alpha(halflife_steps: float) -> float:
    """EW weight of the newest sample such that a sample's weight halves every ``halflife_steps``."""
    return 1.0 - 0.5 ** (1.0 / max(halflife_steps, 1.0))


@dataclass(frozen=True, slots=True)
class Costs:
    """Time spent in a forecaster, for ``bench forecast`` (``predict`` is the H-step forecast per step)."""

    learn_calls: int
    learn_s: float
    predict_calls: int
    predict_s: float

    @property
    def learn_us(self) -> float:
        return 1e6 * self.learn_s / self.learn_calls if self.learn_calls else math.nan

    @property
    def predict_us(self) -> float:
        return 1e6 * self.predict_s / self.predict_calls if self.predict_calls else math.nan


class ErrorTracker:
    """Scores served forecasts against what happened: residual windows and EW MAE per horizon.

    Memory: ``max_horizon`` pending forecasts plus ``max_horizon x band_window`` residuals, fixed.
    """

    __slots__ = ("_alpha", "_band_window", "_counts", "_mae", "_pending", "_residuals", "max_horizon")

    def __init__(self, max_horizon: int, band_window: int, error_halflife_steps: float) -> None:
        self.max_horizon = max_horizon
        self._band_window = band_window
        self._alpha = halflife_to_alpha(error_halflife_steps)
        self.clear()

    def clear(self) -> None:
        """Forget served forecasts and scored errors (after a reset they describe another model)."""
        self._pending: deque[list[float]] = deque(maxlen=self.max_horizon)
        self._residuals = np.zeros((self.max_horizon, self._band_window))
        self._counts = np.zeros(self.max_horizon, dtype=np.int64)
        self._mae = np.full(self.max_horizon, math.nan)

    def observe(self, y: float) -> None:
        """Score every pending forecast whose target step is the one ``y`` belongs to."""
        for age, fc in enumerate(reversed(self._pending), start=1):  # age 1: made one step ago
            h = age - 1
            err = y - fc[h]
            n = int(self._counts[h])
            self._residuals[h, n % self._band_window] = err
            self._counts[h] = n + 1
            prev = self._mae[h]
            # Bias-corrected start: the first error is the estimate, then EW updates.
            self._mae[h] = abs(err) if n == 0 else prev + self._alpha * (abs(err) - prev)

    def push(self, fc: list[float]) -> None:
        self._pending.append(fc)

    def rolling_mae(self, horizon: int) -> float:
        return float(self._mae[min(horizon, self.max_horizon) - 1])

    def scored(self, horizon: int) -> int:
        return int(self._counts[min(horizon, self.max_horizon) - 1])

    def rolling_maes(self) -> np.ndarray:
        """The rolling MAE of every horizon 1..max_horizon (a copy; nan where none is scored yet)."""
        return self._mae.copy()

    def scored_counts(self) -> np.ndarray:
        """How many forecasts of every horizon 1..max_horizon have been scored (a copy)."""
        return self._counts.copy()

    def quantiles(self, coverage: float) -> np.ndarray:
        """``(max_horizon, 2)`` residual quantiles (lo, hi) for a central ``coverage``; 0 with no data."""
        tail = (1.0 - coverage) / 2.0
        if int(self._counts.min()) >= self._band_window:  # every window full: one vectorised call
            return np.quantile(self._residuals, (tail, 1.0 - tail), axis=1).T
        out = np.zeros((self.max_horizon, 2))
        for h in range(self.max_horizon):
            n = min(int(self._counts[h]), self._band_window)
            if n:
                out[h] = np.quantile(self._residuals[h, :n], (tail, 1.0 - tail))
        return out


class BaseForecaster(abc.ABC):
    """Validation, the cached H-step forecast, clamping, error tracking and bands for a forecaster.

    Subclasses implement ``_learn(y)`` and ``_predict(horizon)``; ``_predict`` may return anything
    numeric, the base turns non-finite values into the last observation and clamps to ``[0, cap]``.
    """

    name = "base"

    def __init__(
        self,
        *,
        max_horizon: int = DEFAULT_MAX_HORIZON,
        band_window: int = DEFAULT_BAND_WINDOW,
        band_coverage: float = DEFAULT_BAND_COVERAGE,
        error_halflife_steps: float = 1440.0,
        cap_halflife_steps: float = 1440.0,
    ) -> None:
        if max_horizon < 1:
            raise ValueError("max_horizon must be >= 1")
        if not 0.0 < band_coverage < 1.0:
            raise ValueError("band_coverage must be in (0, 1)")
        self.max_horizon = max_horizon
        self.band_coverage = band_coverage
        self._tracker = ErrorTracker(max_horizon, band_window, error_halflife_steps)
        self._cap_decay = 0.5 ** (1.0 / max(cap_halflife_steps, 1.0))
        self._peak = 0.0  # decaying maximum of the observations
        self._last = 0.0
        self._steps = 0
        self._cached: list[float] = [0.0] * max_horizon
        self._band: list[tuple[float, float, float]] | None = None
        self.restarts = 0
        self._learn_calls = 0
        self._learn_s = 0.0
        self._predict_calls = 0
        self._predict_s = 0.0

    # -- what subclasses provide ------------------------------------------------------------------

    @abc.abstractmethod
    def _learn(self, y: float) -> None: ...

    @abc.abstractmethod
    def _predict(self, horizon: int) -> list[float]: ...

    @abc.abstractmethod
    def _reset_model(self) -> None:
        """Forget the learned state."""

    def _extra_statistics(self) -> dict[str, Any]:
        return {}

    # -- the Forecaster protocol ------------------------------------------------------------------

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def cap(self) -> float:
        return CAP_FACTOR * self._peak + 1.0

    def learn_one(self, y: float, *, imputed: bool = False) -> None:
        v = check_value(y)
        if not imputed:
            self._tracker.observe(v)
        self._peak = max(v, self._peak * self._cap_decay)
        self._last = v
        self._steps += 1
        t0 = time.perf_counter()
        self._learn(v)
        t1 = time.perf_counter()
        raw = self._predict(self.max_horizon)
        t2 = time.perf_counter()
        if not all(math.isfinite(x) for x in raw):
            self._reset_model()  # a state that yields nan/inf will not recover by itself
            self.restarts += 1
        self._cached = self._clean(raw, self.max_horizon)
        self._learn_calls += 1
        self._learn_s += t1 - t0
        self._predict_calls += 1
        self._predict_s += t2 - t1
        self._tracker.push(self._cached)
        self._band = None

    def forecast(self, horizon: int) -> list[float]:
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        if horizon <= self.max_horizon:
            return self._cached[:horizon]
        if self._steps == 0:
            return [0.0] * horizon
        return self._clean(self._predict(horizon), horizon)

    def forecast_band(self, horizon: int) -> list[tuple[float, float, float]]:
        mids = self.forecast(horizon)
        if self._band is None:
            q = self._tracker.quantiles(self.band_coverage)
            self._band = [self._band_point(mid, q[h]) for h, mid in enumerate(self._cached)]
        if horizon <= self.max_horizon:
            return self._band[:horizon]
        q = self._tracker.quantiles(self.band_coverage)
        # Past the tracked horizons the errors of the longest tracked one are the best evidence.
        return self._band + [self._band_point(mid, q[-1]) for mid in mids[self.max_horizon :]]

    def rolling_mae(self, horizon: int) -> float:
        return self._tracker.rolling_mae(horizon)

    def scored(self, horizon: int) -> int:
        return self._tracker.scored(horizon)

    def rolling_maes(self) -> np.ndarray:
        """``rolling_mae(h)`` for every tracked horizon at once, as an array of ``max_horizon``."""
        return self._tracker.rolling_maes()

    def scored_counts(self) -> np.ndarray:
        """``scored(h)`` for every tracked horizon at once, as an array of ``max_horizon``."""
        return self._tracker.scored_counts()

    def reset(self) -> None:
        """Forget everything learned, errors included (after a long gap the state describes another time)."""
        self._reset_model()
        self._tracker.clear()
        self._peak = 0.0
        self._last = 0.0
        self._cached = [0.0] * self.max_horizon
        self._band = None
        self._steps = 0

    def costs(self) -> Costs:
        return Costs(self._learn_calls, self._learn_s, self._predict_calls, self._predict_s)

    def statistics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": self._steps,
            "restarts": self.restarts,
            "rolling_mae": [_json_float(self.rolling_mae(h)) for h in range(1, self.max_horizon + 1)],
            **self._extra_statistics(),
        }

    # -- helpers ----------------------------------------------------------------------------------

    def _clean(self, values: list[float], horizon: int) -> list[float]:
        """Exactly ``horizon`` finite values in ``[0, cap]``; a short list is extended flat."""
        cap = self.cap
        out: list[float] = []
        prev = self._last
        for i in range(horizon):
            v = float(values[i]) if i < len(values) else prev
            if not math.isfinite(v):
                v = self._last  # a diverged model serves the last observation, never nan/inf
            v = min(max(v, 0.0), cap)
            out.append(v)
            prev = v
        return out

    @staticmethod
    def _band_point(mid: float, q: np.ndarray) -> tuple[float, float, float]:
        lo = max(0.0, mid + min(float(q[0]), 0.0))
        hi = mid + max(float(q[1]), 0.0)
        return (lo, mid, hi)


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 6)
