"""ferryman: a session-aware load-balancing proxy."""

__version__ = "0.1.0"
