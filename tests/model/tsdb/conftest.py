"""Fixtures for the time-series store tests: databases under tmp_path and a fixed epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from model.tsdb import SeriesStore

# 2024-03-04T00:00:00Z, a Monday at midnight UTC: every test's "t = 0".
T0 = 1_709_510_400


@pytest.fixture
def make_store(tmp_path: Any) -> Iterator[Callable[..., SeriesStore]]:
    opened: list[SeriesStore] = []

    def make(name: str = "metrics.db", **kwargs: Any) -> SeriesStore:
        store = SeriesStore(tmp_path / name, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        try:
            store.close()
        except Exception:
            pass


def _tick(store: SeriesStore, start: int, end: int, values: dict[tuple[str, str], Any] | None = None) -> None:
    for ts in range(start, end, store.interval_s):
        store.record_snapshot(ts, values or {})


@pytest.fixture
def tick() -> Callable[..., None]:
    """``tick(store, start, end, values)``: one snapshot per interval in [start, end), the collector running."""
    return _tick


@pytest.fixture
def t0() -> int:
    return T0
