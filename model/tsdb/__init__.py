"""Metrics time-series store: raw per-interval rows, minute/hour/day rollups, retention (DESIGN section 6).

``docs/metrics.md`` describes the built-in metrics, their kinds and the rules; ``rollup`` states the
rules in code.
"""

from __future__ import annotations

from model.tsdb.catalog import BUILTIN_METRICS, Catalog, Kind, MetricConflict, MetricSpec, UnknownMetric
from model.tsdb.groom import Retention
from model.tsdb.query import Granularity, SeriesResult, granularity_for_span, series_response
from model.tsdb.store import SeriesStore, StoreSettingsMismatch, StoreStatistics, read_settings

__all__ = [
    "BUILTIN_METRICS",
    "Catalog",
    "Granularity",
    "Kind",
    "MetricConflict",
    "MetricSpec",
    "Retention",
    "SeriesResult",
    "SeriesStore",
    "StoreSettingsMismatch",
    "StoreStatistics",
    "UnknownMetric",
    "granularity_for_span",
    "read_settings",
    "series_response",
]
