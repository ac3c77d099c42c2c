"""Migration bookkeeping (sans-IO): per-target rate limits, counters, and the recent reports.

Every migration ends in one report (``replay.migration.MigrationReport.as_dict`` plus ``outcome``,
``cause``, ``conn_id``, ``sid``); a refused one (rate limit, busy connection) is *deferred* with its
reason and never starts.  The counters feed ``/metrics``, the last reports ``/stats``.
"""

from __future__ import annotations

import collections
from typing import Any

OUTCOMES = ("committed", "rolled_back", "aborted", "deferred")
RECENT = 50


class TokenBucket:
    """``rate`` per second with a burst of one second's worth; ``take(now)`` is True if allowed."""

    __slots__ = ("rate", "stamp_s", "tokens")

    def __init__(self, rate: float, now_s: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp_s = now_s

    def take(self, now_s: float) -> bool:
        elapsed = now_s - self.stamp_s
        if elapsed > 0:
            self.tokens = min(self.rate, self.tokens + elapsed * self.rate)
            self.stamp_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class MigrationStats:
    def __init__(self) -> None:
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.in_progress = 0
        self.pause_sum_s = 0.0
        self.pause_count = 0
        self.pause_max_s = 0.0
        self.precopy_bytes_total = 0
        self.replay_bytes_total = 0
        self.partitions_replayed_total = 0
        self.partitions_present_total = 0
        self.resent_requests_total = 0
        self.unknown_outcomes_total = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, target: str, rate: float, now_s: float) -> bool:
        """Whether a migration towards ``target`` may start now (per-target token bucket)."""
        bucket = self._buckets.get(target)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[target] = TokenBucket(rate, now_s)
        return bucket.take(now_s)

    def started(self) -> None:
        self.in_progress += 1

    def deferred(self, report: dict[str, Any]) -> None:
        self.outcomes["deferred"] += 1
        self.recent.append(report)

    def finished(self, report: dict[str, Any]) -> None:
        self.in_progress -= 1
        self.outcomes[report["outcome"]] = self.outcomes.get(report["outcome"], 0) + 1
        pause = report.get("pause_s")
        if pause is not None:
            self.pause_sum_s += pause
            self.pause_count += 1
            if pause > self.pause_max_s:
                self.pause_max_s = pause
        self.precopy_bytes_total += sum(report.get("precopy_bytes", {}).values())
        self.replay_bytes_total += sum(report.get("replay_bytes", {}).values())
        self.partitions_replayed_total += report.get("partitions_replayed", 0)
        self.partitions_present_total += report.get("partitions_present", 0)
        self.resent_requests_total += report.get("resent_requests", 0)
        self.unknown_outcomes_total += report.get("unknown_outcomes", 0)
        self.recent.append(report)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": dict(self.outcomes),
            "in_progress": self.in_progress,
            "pause_avg_s": self.pause_sum_s / self.pause_count if self.pause_count else None,
            "pause_max_s": self.pause_max_s if self.pause_count else None,
            "precopy_bytes_total": self.precopy_bytes_total,
            "replay_bytes_total": self.replay_bytes_total,
            "partitions_replayed_total": self.partitions_replayed_total,
            "partitions_present_total": self.partitions_present_total,
            "resent_requests_total": self.resent_requests_total,
            "unknown_outcomes_total": self.unknown_outcomes_total,
            "recent": list(self.recent)[-10:],
        }
