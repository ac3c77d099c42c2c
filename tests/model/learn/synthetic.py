"""Synthetic series for the model tests: short (river models are slow), seeded, deterministic."""

from __future__ import annotations

import numpy as np

SEASON = 24  # one "day" of 24 steps keeps the seasonal models' warm-up short


def seasonal_series(days: int, *, seed: int = 7, noise: float = 3.0, level: float = 100.0) -> list[float]:
    """A clearly seasonal count series: a daily sine of amplitude 0.6 x level plus small noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * SEASON)
    y = level * (1.0 + 0.6 * np.sin(2 * np.pi * t / SEASON)) + rng.normal(0.0, noise, len(t))
    return np.maximum(y, 0.0).round(3).tolist()


def adversarial_series() -> list[float]:
    """Zeros, a constant stretch, huge spikes up to MAX_VALUE, alternation between extremes, tiny values."""
    out: list[float] = [0.0] * 30
    out += [5.0] * 40
    out += [5.0, 1e12, 5.0, 5.0, 1e12, 0.0] * 5
    out += [0.0, 1e9] * 20
    out += [1e15, 0.0, 1e15, 1e15, 2.0]  # the largest value accepted
    out += [1e-9, 0.0, 3.0] * 10
    out += [7.0] * 40
    return out
