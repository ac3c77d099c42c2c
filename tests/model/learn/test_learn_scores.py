"""The churn hazard and the health formula, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.learn.scores import AGE_BUCKETS, ChurnHazard, age_bucket, health, stability


def test_age_buckets_are_log2() -> None:
    ages = np.array([0.0, 0.99, 1.0, 1.99, 2.0, 3.9, 4.0, 1000.0, 2.0**20, 1e12, -5.0])
    assert age_bucket(ages).tolist() == [0, 0, 1, 1, 2, 2, 3, 10, AGE_BUCKETS - 1, AGE_BUCKETS - 1, 0]


def test_without_data_the_prior_lifetime_gives_the_churn() -> None:
    hz = ChurnHazard(60.0, prior_lifetime_s=600.0)
    p = hz.probability(np.array([0.0, 5.0, 1e6]), np.array([0.0, 30.0, 1e6]))
    assert p == pytest.approx([1 - math.exp(-60 / 600)] * 3)


def test_laplace_smoothed_rate_and_cumulative_hazard_across_buckets() -> None:
    hz = ChurnHazard(3.0, prior_lifetime_s=10.0, halflife_s=1e30)  # no decay
    # Active connections (idle group 0): 30 s of exposure and 3 ends in the [4, 8) s bucket.
    hz.expose(np.array([5.0, 6.0, 7.0]), np.zeros(3), 10.0)
    for _ in range(3):
        hz.ended(6.0, 0.0)
    rates = hz.rates()
    assert rates[0, 3] == pytest.approx((3 + 1) / (30 + 10))
    assert rates[0, 2] == pytest.approx(1 / 10)
    # Age 3 s, horizon 3 s: 1 s in [2, 4) at 0.1/s, then 2 s in [4, 8) at 0.1/s as well.
    assert hz.probability(np.array([3.0]), np.zeros(1))[0] == pytest.approx(1 - math.exp(-0.3))
    # Idle connections (group 2) have learned nothing: the prior applies.
    assert hz.probability(np.array([5.0]), np.array([1e4]))[0] == pytest.approx(1 - math.exp(-0.3))
    hz.ended(6.0, 0.0)
    hz.expose(np.array([6.0]), np.zeros(1), 0.0)
    assert hz.rates()[0, 3] == pytest.approx(5 / 40)


def test_exposure_and_ends_decay_with_the_half_life() -> None:
    hz = ChurnHazard(10.0, halflife_s=100.0)
    hz.ended(5.0, 0.0)
    hz.expose(np.array([5.0]), np.zeros(1), 100.0)  # decays first, then adds
    assert hz.ends.sum() == pytest.approx(0.5)
    assert hz.exposure_s.sum() == pytest.approx(100.0)


def test_churn_is_a_probability_even_for_extreme_hazards() -> None:
    hz = ChurnHazard(1e9, prior_lifetime_s=1e-9)
    p = hz.probability(np.array([0.0, 1e15]), np.array([0.0, 1e15]))
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.isfinite(p))


def test_stability_and_health_by_hand() -> None:
    fast, slow, cv = np.array([6.0, 0.0, 2.0]), np.array([2.0, 0.0, 2.0]), np.array([0.5, 0.0, 0.0])
    stab = stability(fast, slow, cv)
    assert stab.tolist() == pytest.approx([1 / (1 + 0.5 + 4 / 8), 1.0, 1.0])
    rate = np.array([6.0, 0.0, 3.0])  # mean 3
    churn = np.array([0.5, 0.0, 0.1])
    h = health(rate, stab, churn)
    assert h.tolist() == pytest.approx(
        [0.5 * (0.5 * 0.5 + 0.5 * 6 / 9), 1.0 * (0.5 * 1.0 + 0.0), 0.9 * (0.5 * 1.0 + 0.5 * 0.5)]
    )
    assert health(np.zeros(2), np.ones(2), np.zeros(2)).tolist() == [0.5, 0.5]
    assert health(np.array([]), np.array([]), np.array([])).size == 0
