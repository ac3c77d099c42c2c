"""Usage reporting: per-client, per-resource counts from the access log (DESIGN section 7).

A daily job turns one local day of log into sorted, gzip'ed count lines and carries the sessions still
open at midnight to the next day; a month-end job merges the daily files in client order in memory
bounded by one client, writes JSON, CSV and HTML reports, and keeps the top client IPs with heaps.
Formats, file layout and commands: docs/usage.md.

The API is imported lazily, so that ``ferryman --help`` (which imports ``model.usage.cli``) stays fast::

    from model.usage import UsageOptions, run_daily, run_monthly, groom
    run_daily(UsageOptions(input="access.log", output_dir="usage"), datetime.date(2026, 11, 22))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.usage.daily import DailyResult, run_daily
    from model.usage.errors import Cancelled, UsageError
    from model.usage.monthly import MonthlyResult, run_monthly
    from model.usage.options import UsageOptions
    from model.usage.retention import GroomResult, groom
    from model.usage.schedule import next_daily_run, run_scheduled

_LAZY = {
    "UsageOptions": "model.usage.options",
    "DailyResult": "model.usage.daily",
    "run_daily": "model.usage.daily",
    "MonthlyResult": "model.usage.monthly",
    "run_monthly": "model.usage.monthly",
    "GroomResult": "model.usage.retention",
    "groom": "model.usage.retention",
    "next_daily_run": "model.usage.schedule",
    "run_scheduled": "model.usage.schedule",
    "UsageError": "model.usage.errors",
    "Cancelled": "model.usage.errors",
}

__all__ = [
    "Cancelled",
    "DailyResult",
    "GroomResult",
    "MonthlyResult",
    "UsageError",
    "UsageOptions",
    "groom",
    "next_daily_run",
    "run_daily",
    "run_monthly",
    "run_scheduled",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'model.usage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
