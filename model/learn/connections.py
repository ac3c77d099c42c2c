"""Per-connection features, vectorised over all connections each tick, and their scores.

Theory of operation
-------------------
The learner gives every live connection a **slot** in ``[0, capacity)`` (``open``), feeds each tick
the per-connection counters of that tick as arrays keyed by slot (``update``), and frees the slot when
the connection ends (``close``), after which the slot is reused.  State is a fixed set of float arrays
of length ``capacity`` (``STATE_FIELDS``): memory per connection is constant however long it lives
and however many ticks pass, and one tick costs a handful of numpy operations over ``capacity``
elements, never a Python loop over connections.

Features per slot, with ``dt`` the time since the previous tick and ``r = msgs / dt`` the message
rate of this tick (a live slot absent from a tick had no messages; a connection opened during the
tick divides by the time it was open, at least a second):

- ``fast``, ``slow``: EWMAs of ``r`` with time constants ``fast_tau_s`` (10 s) and ``slow_tau_s``
  (the horizon); the weight of a sample is ``1 - exp(-dt / tau)``, so irregular ticks are weighted
  by the time they cover;
- ``trend = fast - slow`` (messages per second): positive while a connection speeds up;
- ``burstiness``: coefficient of variation of ``r`` from an exponentially weighted mean and variance
  (the incremental form of Finch 2009, "Incremental calculation of weighted mean and variance", with
  the slow weight);
- ``bytes_rate``: slow EWMA of bytes per second;
- ``idle_s``: time since the last tick with a message; ``age_s``: time since ``open``.

A new connection's first tick initialises its EWMAs to that tick's rate (no warm-up from zero).

Scores (``scores()``): ``predicted_rate = max(0, fast + trend_damping * trend)``: the current rate,
extrapolated by half the trend (damped: trends of single connections rarely last a whole horizon);
stability, churn and health as documented in ``model.learn.scores``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from model.learn.scores import ChurnHazard, Score, health, stability

STATE_FIELDS = (
    "opened_s",
    "last_active_s",
    "fast",
    "slow",
    "mean",
    "var",
    "bytes_rate",
    "ticks",
)
DEFAULT_FIRST_TICK_S = 1.0  # the learner's default tick, for the very first update
MIN_INTERVAL_S = 1.0  # shortest interval a first tick's rate is computed over
MAX_COUNT = 1e12  # per connection and tick; more is a broken counter (and would overflow the variance)


class ConnectionModel:
    """Features and scores for up to ``capacity`` live connections, in fixed-size arrays."""

    def __init__(
        self,
        capacity: int,
        horizon_s: float,
        seed: int = 0,
        *,
        fast_tau_s: float = 10.0,
        slow_tau_s: float | None = None,
        trend_damping: float = 0.5,
        prior_lifetime_s: float = 600.0,
        churn_halflife_s: float = 86400.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if not horizon_s > 0:
            raise ValueError("horizon_s must be > 0")
        self.capacity = capacity
        self.horizon_s = float(horizon_s)
        # Nothing here draws random numbers: the model is a deterministic function of its inputs.  The
        # seed is kept (and reported) so that the learner's components share one reproducibility knob.
        self.seed = seed
        self.fast_tau_s = fast_tau_s
        self.slow_tau_s = slow_tau_s if slow_tau_s is not None else self.horizon_s
        self.trend_damping = trend_damping
        self.active = np.zeros(capacity, dtype=bool)
        self.opened_s = np.zeros(capacity)
        self.last_active_s = np.zeros(capacity)
        self.fast = np.zeros(capacity)
        self.slow = np.zeros(capacity)
        self.mean = np.zeros(capacity)
        self.var = np.zeros(capacity)
        self.bytes_rate = np.zeros(capacity)
        self.ticks = np.zeros(capacity)
        self.churn = ChurnHazard(
            self.horizon_s, prior_lifetime_s=prior_lifetime_s, halflife_s=churn_halflife_s
        )
        self._last_now: float | None = None
        self.updates = 0
        self.rejected_ticks = 0
        self.rejected_entries = 0

    # -- slots ------------------------------------------------------------------------------------

    def open(self, slot: int, now: float) -> None:
        """A connection now occupies ``slot`` (any previous state there is discarded, not counted as an end)."""
        self._check_slot(slot)
        for name in STATE_FIELDS:
            getattr(self, name)[slot] = 0.0
        self.opened_s[slot] = now
        self.last_active_s[slot] = now
        self.active[slot] = True

    def close(self, slot: int, now: float) -> bool:
        """The connection in ``slot`` ended: it teaches the churn model, and the slot is free again."""
        self._check_slot(slot)
        if not self.active[slot]:
            return False
        self.churn.ended(max(now - self.opened_s[slot], 0.0), max(now - self.last_active_s[slot], 0.0))
        self.active[slot] = False
        for name in STATE_FIELDS:
            getattr(self, name)[slot] = 0.0
        return True

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.capacity:
            raise IndexError(f"slot {slot} outside [0, {self.capacity})")

    # -- ticks ------------------------------------------------------------------------------------

    def update(self, now: float, slots: np.ndarray, msgs: np.ndarray, bytes_: np.ndarray) -> bool:
        """One tick: ``msgs[i]`` messages and ``bytes_[i]`` bytes on ``slots[i]`` since the previous tick.

        Entries for free or out-of-range slots, or with counts negative, non-finite or above
        ``MAX_COUNT``, are ignored
        (counted in ``rejected_entries``); a tick not later than the previous one is ignored as a whole
        (``rejected_ticks``) and returns False.
        """
        if not math.isfinite(now) or (self._last_now is not None and now <= self._last_now):
            self.rejected_ticks += 1
            return False
        dt = DEFAULT_FIRST_TICK_S if self._last_now is None else now - self._last_now
        self._last_now = now
        self.updates += 1

        slots = np.asarray(slots, dtype=np.int64).ravel()
        msgs = np.asarray(msgs, dtype=np.float64).ravel()
        nbytes = np.asarray(bytes_, dtype=np.float64).ravel()
        if not (len(slots) == len(msgs) == len(nbytes)):
            raise ValueError("slots, msgs and bytes_ must have the same length")
        ok = (slots >= 0) & (slots < self.capacity)
        ok &= (msgs >= 0) & (msgs <= MAX_COUNT) & (nbytes >= 0) & (nbytes <= MAX_COUNT)  # nan fails too
        ok[ok] &= self.active[slots[ok]]
        self.rejected_entries += int(len(slots) - ok.sum())
        # bincount sums a slot listed twice, and is much faster than np.add.at.
        count = np.bincount(slots[ok], weights=msgs[ok], minlength=self.capacity)
        volume = np.bincount(slots[ok], weights=nbytes[ok], minlength=self.capacity)

        live = self.active
        # A connection opened during this tick was there for part of it only; its rate is over the
        # time it was open, at least MIN_INTERVAL_S (so one message just before the tick is not a
        # rate of thousands per second).
        interval = np.minimum(dt, np.maximum(now - self.opened_s, min(dt, MIN_INTERVAL_S)))
        rate = count / interval
        byte_rate = volume / interval
        a_fast = -math.expm1(-dt / self.fast_tau_s)
        a_slow = -math.expm1(-dt / self.slow_tau_s)

        # Whole-array updates: a free slot has zero state and zero rate, so it stays at zero.
        self.fast += a_fast * (rate - self.fast)
        self.slow += a_slow * (rate - self.slow)
        diff = rate - self.mean
        incr = a_slow * diff
        self.mean += incr
        self.var = (1.0 - a_slow) * (self.var + diff * incr)
        self.bytes_rate += a_slow * (byte_rate - self.bytes_rate)
        first = np.flatnonzero(live & (self.ticks == 0))
        if len(first):  # a connection's first tick: its EWMAs start at the observed rate
            self.fast[first] = rate[first]
            self.slow[first] = rate[first]
            self.mean[first] = rate[first]
            self.var[first] = 0.0
            self.bytes_rate[first] = byte_rate[first]

        self.ticks[live] += 1.0
        self.last_active_s[live & (count > 0)] = now
        self.churn.expose(now - self.opened_s[live], now - self.last_active_s[live], dt)
        return True

    # -- outputs ----------------------------------------------------------------------------------

    def score_arrays(self) -> dict[str, np.ndarray]:
        """Scores of the live connections as arrays (``slot`` plus one array per ``Score`` field)."""
        now = self._last_now if self._last_now is not None else 0.0
        slots = np.flatnonzero(self.active)
        fast, slow = self.fast[slots], self.slow[slots]
        mean = self.mean[slots]
        cv = np.where(mean > 1e-12, np.sqrt(np.maximum(self.var[slots], 0.0)) / np.maximum(mean, 1e-12), 0.0)
        trend = fast - slow
        predicted = np.maximum(fast + self.trend_damping * trend, 0.0)
        stab = stability(fast, slow, cv)
        idle = np.maximum(now - self.last_active_s[slots], 0.0)
        age = np.maximum(now - self.opened_s[slots], 0.0)
        churn_p = self.churn.probability(age, idle)
        return {
            "slot": slots,
            "predicted_rate": predicted,
            "stability": stab,
            "churn_p": churn_p,
            "health": health(predicted, stab, churn_p),
            "trend": trend,
            "burstiness": cv,
            "bytes_rate": self.bytes_rate[slots].copy(),
            "idle_s": idle,
            "age_s": age,
        }

    def scores(self, limit: int | None = None) -> dict[int, Score]:
        """``Score`` of every live connection, keyed by slot.

        With ``limit``, only the ``limit`` connections with the highest predicted rate (ties: lower slot
        first), in that order.  Building ``Score`` objects costs about 2 us each (225 ms for 100,000
        connections); ``score_arrays()`` is the vectorised form for callers that need them all.
        """
        a = self.score_arrays()
        if limit is not None and limit < len(a["slot"]):
            order = np.lexsort((a["slot"], -a["predicted_rate"]))[: max(limit, 0)]
            a = {k: v[order] for k, v in a.items()}
        cols = [a[f.name].tolist() for f in dataclasses.fields(Score)]
        return {slot: Score(*row) for slot, *row in zip(a["slot"].tolist(), *cols, strict=True)}

    def state_bytes(self) -> int:
        """Bytes held per the fixed-size state arrays (constant for a given capacity)."""
        return int(self.active.nbytes + sum(getattr(self, n).nbytes for n in STATE_FIELDS))

    def statistics(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "live": int(self.active.sum()),
            "horizon_s": self.horizon_s,
            "updates": self.updates,
            "rejected_ticks": self.rejected_ticks,
            "rejected_entries": self.rejected_entries,
            "state_bytes": self.state_bytes(),
            "seed": self.seed,
            "churn": self.churn.statistics(),
        }
