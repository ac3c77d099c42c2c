"""The two ways a usage job stops early: the operator's input cannot be used, or it was cancelled."""

from __future__ import annotations


class UsageError(Exception):
    """An input, option, metadata or earlier output that the job cannot use; the message says which
    and why, in one line, ready for the operator.  Bad log lines are not errors: they are counted."""


class Cancelled(Exception):
    """The job saw its cancel flag (the proxy is stopping) and stopped without writing anything."""
