"""Server health: rise/fall hysteresis over check results (sans-IO).

HAProxy's model ("5.2. Server and default-server options": ``rise``, ``fall``): a server that is up
goes down after ``fall`` consecutive failed checks; a server that is down comes back after ``rise``
consecutive successful ones.  Passive observations (a failed connect from the data plane) count as
failed checks, so a dead server leaves the rotation without waiting for the next active check.

Health is separate from the operator's admin state (ready/drain/maint): a server takes new
connections only when it is both READY and UP.
"""

from __future__ import annotations

import enum


class Health(enum.Enum):
    UP = "up"
    DOWN = "down"


class HealthTracker:
    """Consecutive-result counter with hysteresis.  Servers start UP, as in HAProxy."""

    __slots__ = ("failures_total", "fall", "last_error", "rise", "state", "streak")

    def __init__(self, rise: int, fall: int) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.rise = rise
        self.fall = fall
        self.state = Health.UP
        self.streak = 0  # consecutive results that contradict the current state
        self.failures_total = 0
        self.last_error: str | None = None

    def observe(self, ok: bool, error: str | None = None) -> bool:
        """Record one check result; return True when the state changed."""
        if not ok:
            self.failures_total += 1
            self.last_error = error
        if self.state is Health.UP:
            if ok:
                self.streak = 0
                return False
            self.streak += 1
            if self.streak >= self.fall:
                self.state, self.streak = Health.DOWN, 0
                return True
            return False
        if not ok:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= self.rise:
            self.state, self.streak = Health.UP, 0
            self.last_error = None
            return True
        return False

    @property
    def up(self) -> bool:
        return self.state is Health.UP
