"""Per-connection features and scores: hand-computed EWMAs, bounded memory, hostile counters,
churn learned from ends, health ordering, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.learn import ConnectionModel, Score
from model.learn.connections import STATE_FIELDS


def arr(*xs: float) -> np.ndarray:
    return np.asarray(xs, dtype=np.float64)


def slots(*xs: int) -> np.ndarray:
    return np.asarray(xs, dtype=np.int64)


def assert_scores_sane(scores: dict[int, Score]) -> None:
    for s in scores.values():
        for v in (s.predicted_rate, s.stability, s.churn_p, s.health, s.trend, s.burstiness, s.bytes_rate):
            assert math.isfinite(v)
        assert s.predicted_rate >= 0.0
        assert 0.0 <= s.stability <= 1.0
        assert 0.0 <= s.churn_p <= 1.0
        assert 0.0 <= s.health <= 1.0
        assert s.idle_s >= 0.0 and s.age_s >= 0.0


def test_ewmas_trend_and_burstiness_by_hand() -> None:
    m = ConnectionModel(capacity=4, horizon_s=60.0, seed=1, fast_tau_s=10.0)
    m.open(0, 0.0)
    m.update(1.0, slots(0), arr(2.0), arr(200.0))  # first tick: EWMAs start at 2 msg/s
    s = m.scores()[0]
    assert (s.predicted_rate, s.trend, s.burstiness, s.stability) == (2.0, 0.0, 0.0, 1.0)
    m.update(3.0, slots(0), arr(12.0), arr(0.0))  # dt = 2 s, rate 6 msg/s
    a_fast = 1 - math.exp(-2 / 10)
    a_slow = 1 - math.exp(-2 / 60)
    fast = 2 + a_fast * 4
    slow = 2 + a_slow * 4
    mean = 2 + a_slow * 4
    var = (1 - a_slow) * (0 + 4 * a_slow * 4)
    s = m.scores()[0]
    assert m.fast[0] == pytest.approx(fast) and m.slow[0] == pytest.approx(slow)
    assert s.trend == pytest.approx(fast - slow)
    assert s.predicted_rate == pytest.approx(fast + 0.5 * (fast - slow))
    assert s.burstiness == pytest.approx(math.sqrt(var) / mean)
    assert s.stability == pytest.approx(1 / (1 + math.sqrt(var) / mean + (fast - slow) / (fast + slow)))
    assert s.bytes_rate == pytest.approx(200 + a_slow * (0 - 200))
    assert (s.idle_s, s.age_s) == (0.0, 3.0)


def test_idle_time_grows_without_messages_and_a_steady_connection_is_stable() -> None:
    m = ConnectionModel(capacity=2, horizon_s=60.0, seed=1)
    m.open(0, 0.0)
    m.open(1, 0.0)
    for t in range(1, 61):
        m.update(float(t), slots(0), arr(5.0), arr(50.0))  # slot 1 never sends
    s0, s1 = m.scores()[0], m.scores()[1]
    assert s0.predicted_rate == pytest.approx(5.0) and s0.stability == pytest.approx(1.0)
    assert s1.predicted_rate == 0.0 and s1.idle_s == 60.0 and s1.age_s == 60.0
    assert s0.health > s1.health


def test_state_is_fixed_size_and_slots_are_reused() -> None:
    m = ConnectionModel(capacity=64, horizon_s=60.0, seed=1)
    size = m.state_bytes()
    shapes = {name: getattr(m, name).shape for name in STATE_FIELDS}
    rng = np.random.default_rng(4)
    now = 0.0
    live: set[int] = set()
    for _ in range(2000):
        now += 1.0
        for slot in rng.choice(64, size=3, replace=False).tolist():
            if slot in live:
                m.close(slot, now)
                live.discard(slot)
            else:
                m.open(slot, now)
                live.add(slot)
        ids = np.asarray(sorted(live), dtype=np.int64)
        m.update(now, ids, rng.poisson(3, len(ids)).astype(float), rng.poisson(300, len(ids)).astype(float))
    assert m.state_bytes() == size
    assert {name: getattr(m, name).shape for name in STATE_FIELDS} == shapes
    assert m.churn.exposure_s.shape == m.churn.ends.shape == (3, 22)
    assert set(m.scores()) == live
    # A reused slot starts from scratch.
    slot = next(iter(live))
    m.close(slot, now + 1)
    m.open(slot, now + 1)
    m.update(now + 2, slots(slot), arr(1.0), arr(1.0))
    assert m.scores()[slot].age_s == 1.0 and m.scores()[slot].predicted_rate == 1.0


def test_hostile_counters_are_ignored_and_never_poison_scores() -> None:
    m = ConnectionModel(capacity=3, horizon_s=60.0, seed=1)
    m.open(0, 0.0)
    m.open(1, 0.0)
    ok = m.update(
        1.0,
        slots(0, 1, 1, 2, 7, -1, 0),  # slot 1 twice (summed), 2 is free, 7 and -1 out of range
        arr(1.0, 2.0, 3.0, 9.0, 9.0, 9.0, math.nan),
        arr(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    )
    assert ok
    assert m.rejected_entries == 4
    assert m.scores()[1].predicted_rate == 5.0
    m.update(2.0, slots(0, 1, 1), arr(-5.0, 1e300, 1.0), arr(0.0, 1.0, math.inf))
    assert m.rejected_entries == 7
    m.update(3.0, slots(0, 1), arr(1e12, 1e12), arr(1e12, 1e12))
    m.update(4.0, slots(0), arr(0.0), arr(0.0))
    assert_scores_sane(m.scores())
    assert not m.update(3.0, slots(0), arr(1.0), arr(1.0))  # the same tick again
    assert not m.update(2.5, slots(0), arr(1.0), arr(1.0))  # a tick from the past
    assert m.rejected_ticks == 2
    with pytest.raises(IndexError):
        m.open(3, 4.0)
    with pytest.raises(ValueError):
        m.update(5.0, slots(0, 1), arr(1.0), arr(1.0))


def test_scores_can_be_limited_to_the_heaviest_connections() -> None:
    m = ConnectionModel(capacity=5, horizon_s=60.0, seed=1)
    for s in range(5):
        m.open(s, 0.0)
    m.update(1.0, slots(0, 1, 2, 3, 4), arr(1.0, 9.0, 4.0, 9.0, 0.0), arr(0, 0, 0, 0, 0))
    top = m.scores(limit=3)
    assert list(top) == [1, 3, 2]
    assert top[2] == m.scores()[2]
    assert m.scores(limit=0) == {} and len(m.scores(limit=99)) == 5


def test_closing_a_free_slot_teaches_nothing() -> None:
    m = ConnectionModel(capacity=2, horizon_s=60.0, seed=1)
    assert not m.close(1, 5.0)
    assert m.churn.ends_total == 0


def test_churn_is_learned_from_observed_ends() -> None:
    m = ConnectionModel(capacity=200, horizon_s=10.0, seed=1)
    prior = m.scores()
    assert prior == {}
    now = 0.0
    # Many connections that always end about 6 s after opening, while sending steadily.
    for _ in range(40):
        for s in range(100):
            m.open(s, now)
        for k in range(1, 7):
            m.update(now + k, np.arange(100), np.ones(100), np.ones(100))
        now += 6.0
        for s in range(100):
            m.close(s, now)
    m.open(0, now)
    m.update(now + 1, slots(0), arr(1.0), arr(1.0))
    young = m.scores()[0].churn_p  # age 1 s: the next 10 s cross the age where everyone ends
    m.open(1, now + 1)
    m.churn.exposure_s[0, 12:] += 1e7  # long-lived connections of age 2^11 s and more never ended
    m.opened_s[1] = now + 1 - 5000.0
    m.update(now + 2, slots(0, 1), arr(1.0, 1.0), arr(1.0, 1.0))
    s = m.scores()
    assert young > 0.5
    assert s[1].churn_p < 0.01
    assert s[1].health > s[0].health


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["open", "close", "tick"]),
            st.integers(0, 7),
            st.floats(0, 2e12, allow_nan=False),  # above MAX_COUNT (1e12) is rejected
            st.floats(0.001, 1e4, allow_nan=False),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_any_sequence_of_operations_gives_bounded_finite_scores(
    ops: list[tuple[str, int, float, float]],
) -> None:
    m = ConnectionModel(capacity=8, horizon_s=30.0, seed=2)
    now = 0.0
    for op, slot, count, dt in ops:
        now += dt
        if op == "open":
            m.open(slot, now)
        elif op == "close":
            m.close(slot, now)
        else:
            live = np.flatnonzero(m.active)
            m.update(now, live, np.full(len(live), count), np.full(len(live), count * 10))
        assert_scores_sane(m.scores())


def test_same_operations_same_scores() -> None:
    def run() -> dict[int, Score]:
        m = ConnectionModel(capacity=16, horizon_s=60.0, seed=5)
        rng = np.random.default_rng(8)
        for s in range(16):
            m.open(s, 0.0)
        for t in range(1, 200):
            if t % 50 == 0:
                m.close(t % 16, float(t))
                m.open(t % 16, float(t))
            m.update(
                float(t), np.arange(16), rng.poisson(4, 16).astype(float), rng.poisson(400, 16).astype(float)
            )
        return m.scores()

    assert run() == run()
