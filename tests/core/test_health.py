from __future__ import annotations

import pytest

from proxy.core.health import Health, HealthTracker


def test_goes_down_after_fall_consecutive_failures() -> None:
    h = HealthTracker(rise=2, fall=3)
    assert [h.observe(False), h.observe(False)] == [False, False]
    assert h.state is Health.UP
    assert h.observe(False) is True
    assert h.state is Health.DOWN and h.failures_total == 3


def test_success_resets_the_failure_streak() -> None:
    h = HealthTracker(rise=2, fall=2)
    h.observe(False)
    h.observe(True)
    h.observe(False)
    assert h.state is Health.UP


def test_comes_back_after_rise_consecutive_successes() -> None:
    h = HealthTracker(rise=2, fall=1)
    h.observe(False, "check: connection refused")
    assert h.state is Health.DOWN and h.last_error == "check: connection refused"
    assert h.observe(True) is False
    h.observe(False)
    assert h.observe(True) is False
    assert h.observe(True) is True
    assert h.up and h.last_error is None


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        HealthTracker(0, 1)
