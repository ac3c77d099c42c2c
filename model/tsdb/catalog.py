"""The metrics the time-series store knows, and how each kind is summarised, declared once.

Every metric has a kind, and the kind alone decides how rows are combined (DESIGN section 6, and the
aggregation rules of the monitoring service the store follows):

- STATE: a level over a period (sessions connected, backends failed).  Exposed as the MAX over the
  period: "how many were there at worst".
- DURATION: a time taken by each of many events (connect time, session length).  Stored as
  ``(sum, count)`` at every granularity and exposed as ``sum / count``, so an hour's average is the
  exact average of all its events, never an average of minute averages.
- OCCURRENCE: things that happened (sessions started, bytes sent).  Exposed as the SUM.

Every row at every granularity stores the same three numbers, ``(sum, count, max)``, so a coarser row is
always the SUM/SUM/MAX of finer rows and the exposed value is computed only when reading.

``sessions_connected`` is special: besides gauge samples it is derived from session records by the
concurrency minute rule (see ``rollup.concurrent_sessions``).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# What callers record: a number, or for durations a (sum_s, count) pair.
Value = float | int | tuple[float, int]
# What every row stores: (sum, count, max).
Triple = tuple[float, int, float | None]


class Kind(enum.Enum):
    STATE = "state"
    DURATION = "duration"
    OCCURRENCE = "occurrence"


class UnknownMetric(ValueError):
    """A metric name that is neither built in nor registered."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        super().__init__(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(known))} "
            "(register others with SeriesStore.register_metric)"
        )


class MetricConflict(ValueError):
    """A metric registered again with a different kind."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    unit: str
    help: str
    # True when the minute rollup also derives the value from session records.
    from_sessions: bool = False

    def expose(self, v_sum: float, v_count: int, v_max: float | None) -> float | None:
        """The value a reader sees for a row holding ``(sum, count, max)``."""
        if self.kind is Kind.STATE:
            return None if v_max is None else float(v_max)
        if self.kind is Kind.OCCURRENCE:
            return float(v_sum)
        return float(v_sum) / v_count if v_count else None

    def encode(self, value: object) -> Triple | None:
        """A recorded value as ``(sum, count, max)``; None for a duration pair of zero events.

        OCCURRENCE: a count (>= 0) for the interval.  STATE: a level.  DURATION: one observation in
        seconds, or a ``(sum_s, count)`` pair for several.  Raises ValueError for anything else.
        """
        what = self.name
        if self.kind is Kind.DURATION and isinstance(value, tuple | list):
            if len(value) != 2:
                raise ValueError(f"{what}: a duration pair is (sum_s, count), not {value!r}")
            total = _number(value[0], what)
            count = value[1]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0 or total < 0:
                raise ValueError(
                    f"{what}: a duration pair needs sum >= 0 and an integer count >= 0, not {value!r}"
                )
            return (total, count, None) if count else None
        number = _number(value, what)
        if self.kind is not Kind.STATE and number < 0:
            raise ValueError(f"{what}: a {self.kind.value} value cannot be negative ({number!r})")
        return number, 1, number


def _number(value: object, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what}: value must be a number, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what}: value must be finite, not {value!r}")
    return value


# The one table of built-in metrics.  Entities are backends ("pool/server"), pools or listeners; the
# collector decides, the store only needs a name.
BUILTIN_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "sessions_connected",
        Kind.STATE,
        "sessions",
        "Sessions present at any moment of the period (session records and/or gauge samples).",
        from_sessions=True,
    ),
    MetricSpec("backends_failed", Kind.STATE, "backends", "Backends failing health checks."),
    MetricSpec("sessions_started", Kind.OCCURRENCE, "sessions", "Sessions that began."),
    MetricSpec("connection_failures", Kind.OCCURRENCE, "connections", "Failed connects to a backend."),
    MetricSpec("bytes_in", Kind.OCCURRENCE, "bytes", "Bytes received from clients."),
    MetricSpec("bytes_out", Kind.OCCURRENCE, "bytes", "Bytes sent to clients."),
    MetricSpec("frames_in", Kind.OCCURRENCE, "frames", "Frames (messages) received from clients."),
    MetricSpec("frames_out", Kind.OCCURRENCE, "frames", "Frames (messages) sent to clients."),
    MetricSpec("errors", Kind.OCCURRENCE, "errors", "Errors of any cause (peer's or ours)."),
    MetricSpec("connect_duration_s", Kind.DURATION, "seconds", "Time to connect to a backend."),
    MetricSpec("session_duration_s", Kind.DURATION, "seconds", "Length of sessions that ended."),
)

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_metric_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}: use 1-64 of a-z, 0-9 and _, starting with a letter")


class Catalog:
    """Name → spec, starting from ``BUILTIN_METRICS``; registration is idempotent for the same kind."""

    __slots__ = ("_by_name",)

    def __init__(self, specs: Iterable[MetricSpec] = BUILTIN_METRICS) -> None:
        self._by_name: dict[str, MetricSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: MetricSpec) -> bool:
        """Add ``spec``; return False if an identical-kind metric already exists."""
        check_metric_name(spec.name)
        old = self._by_name.get(spec.name)
        if old is not None:
            if old.kind is not spec.kind:
                raise MetricConflict(
                    f"metric {spec.name!r} is already a {old.kind.value} metric, not {spec.kind.value}"
                )
            return False
        self._by_name[spec.name] = spec
        return True

    def get(self, name: str) -> MetricSpec:
        spec = self._by_name.get(name)
        if spec is None:
            raise UnknownMetric(name, self._by_name)
        return spec

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[MetricSpec]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)
