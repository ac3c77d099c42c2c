"""Building access-log lines and running the usage jobs on them, for the usage tests."""

from __future__ import annotations

import datetime as dt
import gzip
import pathlib
from typing import Any

import orjson

from model.usage.daily import DailyResult, run_daily
from model.usage.monthly import MonthlyResult, run_monthly
from model.usage.options import UsageOptions

HERE = pathlib.Path(__file__).resolve().parent


def line(
    ts: str,
    *,
    session: str | None = "s1",
    client_id: str | None = None,
    ip: str = "10.0.0.1",
    resource: str = "play",
    count: int = 1,
    status: str = "client_closed",
    bytes_in: int = 0,
    bytes_out: int = 0,
    **extra: Any,
) -> str:
    """One access-log line (as the proxy writes it) at ``ts``: ``"2026-11-10T10:00:00"`` or with
    fraction; ``Z`` is added."""
    if "." not in ts:
        ts += ".000000"
    record = {
        "ts": ts + "Z",
        "start": ts + "Z",
        "kind": "frames" if session is not None else "conn",
        "conn_id": 1,
        "listener": "play",
        "pool": "game",
        "server": "s1",
        "client_ip": ip,
        "client_port": 40000,
        "session": session,
        "client_id": client_id,
        "resource": resource,
        "status": status,
        "count": count,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "duration_s": 0.0,
        **extra,
    }
    return orjson.dumps(record).decode()


def write_log(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines))
    return path


def options(out: pathlib.Path, **kw: Any) -> UsageOptions:
    return UsageOptions(output_dir=str(out), **kw)


def daily(out: pathlib.Path, date: str, log: pathlib.Path | list[pathlib.Path], **kw: Any) -> DailyResult:
    inputs = tuple(str(p) for p in (log if isinstance(log, list) else [log]))
    seek = kw.pop("seek", True)
    return run_daily(options(out, **kw), dt.date.fromisoformat(date), inputs=inputs, seek=seek)


def monthly(out: pathlib.Path, month: str, **kw: Any) -> MonthlyResult:
    memory_bytes = kw.pop("memory_bytes", 64 * 1024 * 1024)
    return run_monthly(options(out, **kw), month, memory_bytes=memory_bytes)


def gz_text(path: pathlib.Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read()


def stats(out: pathlib.Path, date: str, source: str = "ferryman") -> list[str]:
    y, m, d = date.split("-")
    return gz_text(out / y / m / d / f"{source}.stats.gz").splitlines()


def ips(out: pathlib.Path, date: str, source: str = "ferryman") -> list[str]:
    y, m, d = date.split("-")
    return gz_text(out / y / m / d / f"{source}.ips.gz").splitlines()


def carried(out: pathlib.Path, date: str, source: str = "ferryman") -> list[dict[str, Any]]:
    y, m, d = date.split("-")
    text = gz_text(out / y / m / d / f"{source}.sessions.gz")
    return [orjson.loads(x) for x in text.splitlines()]


def report(out: pathlib.Path, month: str) -> dict[str, Any]:
    y, m = month.split("-")
    return orjson.loads((out / y / m / "report.json").read_bytes())
