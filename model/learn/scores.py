"""Connection scores: the churn hazard learned from observed connection ends, and the health formula.

Churn
-----
The probability that a connection ends within the horizon ``H`` comes from a piecewise-constant
hazard (a life table, as in survival analysis: Kaplan & Meier 1958; the piecewise-exponential model of
Friedman 1982).  Connections are grouped by **age** (log2 buckets: <1 s, 1-2 s, 2-4 s, ... 2^20 s and
older) and by **idle time** (active within the last ``idle_edges_s[0]`` seconds, within
``idle_edges_s[1]``, or idle longer).  Per group we keep

- ``exposure``: connection-seconds spent in the group (every live connection adds ``dt`` each tick),
- ``ends``: connections that ended while in the group,

both decayed with a half-life (a day by default) so the table follows changing clients.  The hazard
rate is the Laplace-smoothed ratio ``(ends + 1) / (exposure + prior_lifetime_s)``: with no data it
is ``1 / prior_lifetime_s``, and a group seen once cannot claim a rate of 0 or infinity.  Integrating
the hazard over the next ``H`` seconds of age (the cumulative hazard is piecewise linear in age, so
``np.interp`` over the bucket edges is exact) gives ``churn_p = 1 - exp(-(Lambda(age + H) -
Lambda(age)))``, assuming the idle group does not change within the horizon.  Memory: two arrays of
``3 x 22`` floats, whatever the number of connections.

Health
------
``health = (1 - churn_p) * (W_STABILITY * stability + W_USAGE * usage)``, in [0, 1], where

- ``stability = 1 / (1 + cv + |fast - slow| / (fast + slow))``: 1 for a connection whose message rate
  is steady (coefficient of variation ``cv`` of the per-tick rate near 0, fast and slow EWMAs agree),
  towards 0 for a bursty or quickly changing one; an idle connection is steady (1);
- ``usage = predicted_rate / (predicted_rate + reference_rate)``: 0.5 for a connection at the mean
  predicted rate of the live connections, towards 1 for the heavy ones, 0 for idle ones;
- ``1 - churn_p``: the chance the connection is still there at the end of the horizon.

So a healthy connection is expected to stay, to keep being used and to be predictable; one likely to
end soon scores low whatever its traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

AGE_BUCKETS = 22  # <1 s, [1, 2), [2, 4), ..., [2^19, 2^20), >= 2^20 s (12 days)
W_STABILITY = 0.5
W_USAGE = 0.5
EPS = 1e-12


@dataclass(frozen=True, slots=True)
class Score:
    """One connection's outlook over the model's horizon."""

    predicted_rate: float  # messages per second expected while the connection lives
    stability: float  # [0, 1], 1 = steady
    churn_p: float  # [0, 1], probability the connection ends within the horizon
    health: float  # [0, 1]
    trend: float = 0.0  # fast minus slow EWMA of the message rate, messages per second
    burstiness: float = 0.0  # coefficient of variation of the per-tick message rate
    bytes_rate: float = 0.0  # bytes per second, slow EWMA
    idle_s: float = 0.0
    age_s: float = 0.0


def age_bucket(age_s: np.ndarray) -> np.ndarray:
    """Log2 age bucket: 0 for < 1 s, k for [2^(k-1), 2^k), capped at ``AGE_BUCKETS - 1``."""
    a = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0)
    b = np.floor(np.log2(np.maximum(a, 0.5))).astype(np.int64) + 1
    return np.clip(b, 0, AGE_BUCKETS - 1)


def stability(fast: np.ndarray, slow: np.ndarray, cv: np.ndarray) -> np.ndarray:
    drift = np.abs(fast - slow) / np.maximum(fast + slow, EPS)
    return 1.0 / (1.0 + np.maximum(cv, 0.0) + drift)


def health(predicted_rate: np.ndarray, stab: np.ndarray, churn_p: np.ndarray) -> np.ndarray:
    """The health formula (module docstring) for the live connections given as arrays."""
    rate = np.maximum(predicted_rate, 0.0)
    ref = float(rate.mean()) if rate.size else 0.0
    usage = rate / (rate + ref) if ref > EPS else np.zeros_like(rate)
    h = (1.0 - churn_p) * (W_STABILITY * stab + W_USAGE * usage)
    return np.clip(h, 0.0, 1.0)


class ChurnHazard:
    """Piecewise-constant hazard of a connection ending, by (idle group, age bucket)."""

    def __init__(
        self,
        horizon_s: float,
        *,
        prior_lifetime_s: float = 600.0,
        halflife_s: float = 86400.0,
        idle_edges_s: tuple[float, float] | None = None,
    ) -> None:
        if not (horizon_s > 0 and prior_lifetime_s > 0 and halflife_s > 0):
            raise ValueError("horizon_s, prior_lifetime_s and halflife_s must be > 0")
        self.horizon_s = horizon_s
        self.prior_lifetime_s = prior_lifetime_s
        self.halflife_s = halflife_s
        self.idle_edges_s = idle_edges_s or (10.0, max(horizon_s, 10.0))
        n_idle = len(self.idle_edges_s) + 1
        self.exposure_s = np.zeros((n_idle, AGE_BUCKETS))
        self.ends = np.zeros((n_idle, AGE_BUCKETS))
        self.ends_total = 0
        # Bucket edges in seconds of age: 0, 1, 2, 4, ..., 2^20, then a far edge for the open bucket.
        self._edges = np.concatenate(([0.0], 2.0 ** np.arange(AGE_BUCKETS - 1), [2.0**40]))

    def idle_group(self, idle_s: np.ndarray) -> np.ndarray:
        return np.searchsorted(
            np.asarray(self.idle_edges_s), np.asarray(idle_s, dtype=np.float64), side="right"
        )

    def expose(self, age_s: np.ndarray, idle_s: np.ndarray, dt_s: float) -> None:
        """Every live connection (arrays of their ages and idle times) spent ``dt_s`` more seconds."""
        self._decay(dt_s)
        if len(age_s):
            cell = self.idle_group(idle_s) * AGE_BUCKETS + age_bucket(age_s)
            per_cell = np.bincount(cell, minlength=self.exposure_s.size).reshape(self.exposure_s.shape)
            self.exposure_s += per_cell * dt_s

    def ended(self, age_s: float, idle_s: float) -> None:
        g = int(self.idle_group(np.asarray([idle_s]))[0])
        b = int(age_bucket(np.asarray([age_s]))[0])
        self.ends[g, b] += 1.0
        self.ends_total += 1

    def rates(self) -> np.ndarray:
        """Hazard per second for each (idle group, age bucket), Laplace-smoothed."""
        return (self.ends + 1.0) / (self.exposure_s + self.prior_lifetime_s)

    def probability(self, age_s: np.ndarray, idle_s: np.ndarray) -> np.ndarray:
        """P(end within ``horizon_s``) for connections of these ages and idle times; in [0, 1]."""
        age = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0)
        groups = self.idle_group(idle_s)
        rates = self.rates()
        widths = np.diff(self._edges)
        out = np.zeros(len(age))
        for g in range(rates.shape[0]):
            mask = groups == g
            if not mask.any():
                continue
            cum = np.concatenate(([0.0], np.cumsum(rates[g] * widths)))
            a = age[mask]
            lam = np.interp(a + self.horizon_s, self._edges, cum) - np.interp(a, self._edges, cum)
            out[mask] = -np.expm1(-np.maximum(lam, 0.0))
        return np.clip(out, 0.0, 1.0)

    def _decay(self, dt_s: float) -> None:
        if dt_s > 0:
            f = 0.5 ** (dt_s / self.halflife_s)
            self.exposure_s *= f
            self.ends *= f

    def statistics(self) -> dict[str, Any]:
        ages = self._edges[:-1]
        by_age = self.probability(ages, np.zeros_like(ages))
        return {
            "ends_total": self.ends_total,
            "horizon_s": self.horizon_s,
            "churn_p_active_by_age_bucket": [round(float(p), 6) for p in by_age],
            "exposure_s": round(float(self.exposure_s.sum()), 3),
            "mean_lifetime_prior_s": self.prior_lifetime_s,
            "age_bucket_starts_s": [float(a) for a in ages],
            "decay_halflife_s": self.halflife_s,
        }
