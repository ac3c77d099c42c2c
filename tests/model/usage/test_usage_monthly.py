"""The month-end merge: top-N with ties, deleted clients, reports, byte-identical re-runs."""

from __future__ import annotations

import csv
import gzip
import os
import pathlib
import subprocess
import sys

import orjson
import pytest

from model.usage.errors import UsageError
from model.usage.monthly import run_monthly
from model.usage.options import UsageOptions
from tests.model.usage.helpers import daily, line, monthly, report, stats, write_log

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _requests(ip: str, n: int, day: str, *, status: str = "client_closed") -> list[str]:
    """``n`` tcp connections from ``ip``, a minute apart (no double clicks), from 01:00."""
    return [
        line(f"{day}T{1 + k // 60:02d}:{k % 60:02d}:00", session=None, ip=ip, status=status) for k in range(n)
    ]


def test_top_100_with_ties(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    d1, d2 = [], []
    # 10.0.0.1 .. 10.0.0.10 have 99 .. 90 requests, split over two days; 10.0.0.11 .. 10.0.0.120
    # all have 7 (a tie across the cut: 90 of those 110 make the top 100).
    for n in range(1, 11):
        d1 += _requests(f"10.0.0.{n}", 50, "2026-11-03")
        d2 += _requests(f"10.0.0.{n}", 50 - n, "2026-11-04")
    for n in range(11, 121):
        d1 += _requests(f"10.0.0.{n}", 7, "2026-11-03")
    # Denied: .5 and .7 tie at 2 and .9 has 5.
    d2 += _requests("10.0.0.7", 2, "2026-11-04", status="denied")
    d2 += _requests("10.0.0.5", 2, "2026-11-04", status="denied")
    d2 += _requests("10.0.0.9", 5, "2026-11-04", status="denied")
    daily(out, "2026-11-03", write_log(tmp_path / "d1.log", d1))
    daily(out, "2026-11-04", write_log(tmp_path / "d2.log", d2))
    r = monthly(out, "2026-11")
    top = [(t["ip"], t["requests"]) for t in report(out, "2026-11")["top_requests"]]
    assert len(top) == 100
    # Requests per IP count every request, denied ones too: .5 = 95 + 2, .7 = 93 + 2, .9 = 91 + 5.
    assert top[:10] == [
        ("10.0.0.1", 99),
        ("10.0.0.2", 98),
        ("10.0.0.3", 97),
        ("10.0.0.5", 97),
        ("10.0.0.4", 96),
        ("10.0.0.9", 96),
        ("10.0.0.7", 95),
        ("10.0.0.6", 94),
        ("10.0.0.8", 92),
        ("10.0.0.10", 90),
    ]
    # Ties at 7 go in byte order of the address: 10.0.0.100 < 10.0.0.101 < ... < 10.0.0.11 <
    # 10.0.0.110 < ... < 10.0.0.79 < 10.0.0.80 < ... < 10.0.0.99.  The last 20 of that order
    # (10.0.0.80 .. 10.0.0.99) are the ones left out.
    tied = [ip for ip, n in top[10:]]
    assert all(n == 7 for _, n in top[10:])
    assert tied[:12] == [f"10.0.0.{n}" for n in (100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 11, 110)]
    assert tied[-3:] == ["10.0.0.77", "10.0.0.78", "10.0.0.79"]
    assert not {f"10.0.0.{n}" for n in range(80, 100)} & set(tied)
    denied = [(t["ip"], t["denied"]) for t in report(out, "2026-11")["top_denied"]]
    assert denied == [("10.0.0.9", 5), ("10.0.0.5", 2), ("10.0.0.7", 2)]
    assert r.top_requests[0] == ("10.0.0.1", 99)


def test_top_n_keeps_the_smallest_addresses_among_equal_counts() -> None:
    from model.usage.report import top_push, top_sorted

    heap: list[tuple[int, int, str]] = []
    for order, (ip, n) in enumerate([("a", 1), ("b", 3), ("c", 3), ("d", 2), ("e", 3)], 1):
        top_push(heap, 2, n, order, ip)
    assert top_sorted(heap) == [("b", 3), ("c", 3)]


METADATA_V1 = "clients:\n  alice: gold\n  bob: silver\nresources: [play, login, old]\n"
METADATA_V2 = "clients:\n  alice: gold\nresources: [play, login]\n"  # bob and "old" are gone


def test_clients_deleted_mid_month_go_to_unknown(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    meta = tmp_path / "clients.yaml"
    meta.write_text(METADATA_V1)
    d1 = [
        line("2026-11-03T10:00:00", session="a", client_id="alice", count=2),
        line("2026-11-03T10:00:00", session="a", client_id="alice", resource="old"),
        line("2026-11-03T10:00:00", session="b", client_id="bob", ip="10.0.0.2"),
    ]
    daily(out, "2026-11-03", write_log(tmp_path / "d1.log", d1), metadata=str(meta))
    assert stats(out, "2026-11-03") == [
        "gold|alice|old|1|0|0|0|0|1",
        "gold|alice|play|2|0|0|0|0|1",
        "silver|bob|play|1|0|0|0|0|1",
    ]
    meta.write_text(METADATA_V2)  # bob deleted, "old" retired
    d2 = [
        line("2026-11-20T10:00:00", session="b2", client_id="bob", ip="10.0.0.2"),
        line("2026-11-20T10:00:00", session="c", client_id="carol", ip="10.0.0.3"),  # never existed
    ]
    daily(out, "2026-11-20", write_log(tmp_path / "d2.log", d2), metadata=str(meta))
    assert stats(out, "2026-11-20") == ["unknown|bob|play|1|0|0|0|0|1", "unknown|carol|play|1|0|0|0|0|1"]

    r = monthly(out, "2026-11", metadata=str(meta))
    month = report(out, "2026-11")
    assert month["clients"] == {
        "alice": {
            "group": "gold",
            "total": 3,
            "suppressed": 0,
            "denied": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "resources": {"play": 2},
            "unknown": {"old": 1},
        },
        "bob": {
            "group": "unknown",
            "total": 2,
            "suppressed": 0,
            "denied": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "resources": {"play": 2},
        },
        "carol": {
            "group": "unknown",
            "total": 1,
            "suppressed": 0,
            "denied": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "resources": {"play": 1},
        },
    }
    assert {g: (v["clients"], v["total"]) for g, v in month["groups"].items()} == {
        "gold": (1, 2),
        "unknown": (3, 4),
    }
    assert month["totals"]["total"] == 6 == r.requests
    rows = list(csv.reader((out / "2026" / "11" / "report.csv").read_text().splitlines()))
    assert rows == [
        [
            "group",
            "client",
            "resource",
            "requests",
            "suppressed",
            "denied",
            "bytes_in",
            "bytes_out",
            "sessions",
        ],
        ["unknown", "alice", "old", "1", "0", "0", "0", "0", "1"],
        ["gold", "alice", "play", "2", "0", "0", "0", "0", "1"],
        ["unknown", "bob", "play", "2", "0", "0", "0", "0", "2"],
        ["unknown", "carol", "play", "1", "0", "0", "0", "0", "1"],
    ]
    page = (out / "2026" / "11" / "report.html").read_text()
    assert "Group gold: top 1 of 1 clients" in page and "Group unknown: top 3 of 3 clients" in page
    assert page.count("<svg") == 2


def _month(tmp_path: pathlib.Path) -> list[str]:
    lines = []
    for day in (1, 2, 3):
        for k in range(40):
            lines.append(
                line(
                    f"2026-11-{day:02d}T{k % 24:02d}:{(7 * k) % 60:02d}:{k % 60:02d}",
                    session=f"s{k % 9}",
                    client_id=None if k % 4 == 0 else f"client-{k % 5}",
                    ip=f"10.0.{k % 3}.{k % 7}",
                    resource=("get", "put", "move", "é")[k % 4],
                    count=1 + k % 3,
                    bytes_in=k,
                    bytes_out=2 * k,
                    status="denied" if k % 11 == 0 else "client_closed",
                )
            )
    return lines


def _run_month(tmp_path: pathlib.Path, out: pathlib.Path, **kw: object) -> dict[str, bytes]:
    log = write_log(tmp_path / "month.log", _month(tmp_path))
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        daily(out, day, log)
    monthly(out, "2026-11", **kw)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_reruns_are_byte_identical(tmp_path: pathlib.Path) -> None:
    first = _run_month(tmp_path, tmp_path / "a")
    again = _run_month(tmp_path, tmp_path / "a")  # over the previous run's files
    elsewhere = _run_month(tmp_path, tmp_path / "b")
    tiny_memory = _run_month(tmp_path, tmp_path / "c", memory_bytes=2000)  # many sort runs on disk
    assert first == again
    assert {k: v for k, v in first.items() if "summary" not in k} == {
        k: v for k, v in elsewhere.items() if "summary" not in k
    }
    assert {k: v for k, v in first.items() if k.startswith("2026/11/report")} == {
        k: v for k, v in tiny_memory.items() if k.startswith("2026/11/report")
    }
    gz = first["2026/11/02/ferryman.stats.gz"]
    # RFC 1952 header: magic, deflate, flags (no FNAME), MTIME = 0.
    assert gz[:4] == b"\x1f\x8b\x08\x00" and gz[4:8] == b"\x00\x00\x00\x00"
    assert set(first) >= {"2026/11/report.json", "2026/11/report.csv", "2026/11/report.html"}


def test_reruns_in_other_processes_are_byte_identical(tmp_path: pathlib.Path) -> None:
    log = write_log(tmp_path / "month.log", _month(tmp_path))
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        for argv in (
            ["daily", "--date", "2026-11-01", "--input", str(log), "--out", str(out)],
            ["daily", "--date", "2026-11-02", "--input", str(log), "--out", str(out)],
            ["monthly", "--month", "2026-11", "--out", str(out)],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "proxy", "usage", *argv],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr
        outputs.append(
            {
                str(p.relative_to(out)): p.read_bytes()
                for p in sorted(out.rglob("*"))
                if p.is_file() and "summary" not in p.name
            }
        )
    assert outputs[0] == outputs[1]


def test_report_json_shape_and_client_files(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    log = write_log(tmp_path / "month.log", _month(tmp_path))
    daily(out, "2026-11-01", log)
    r = run_monthly(UsageOptions(output_dir=str(out)), "2026-11", client_files=True)
    doc = orjson.loads((out / "2026" / "11" / "report.json").read_bytes())
    assert list(doc) == [
        "month",
        "sources",
        "days",
        "missing_days",
        "clients",
        "groups",
        "totals",
        "top_requests",
        "top_denied",
    ]
    assert doc["month"] == "2026-11" and doc["sources"] == ["ferryman"]
    assert list(doc["clients"]) == sorted(doc["clients"], key=lambda c: c.encode())
    assert sum(c["total"] for c in doc["clients"].values()) == doc["totals"]["total"] == r.requests
    files = sorted(p.name for p in (out / "2026" / "11" / "clients").iterdir())
    assert len(files) == r.clients and "client-1.json" in files
    one = orjson.loads((out / "2026" / "11" / "clients" / "client-1.json").read_bytes())
    assert one["client"] == "client-1" and one["total"] == doc["clients"]["client-1"]["total"]


def test_monthly_without_daily_files_is_an_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(UsageError, match="no daily files for 2026-11"):
        monthly(tmp_path / "out", "2026-11")
    with pytest.raises(UsageError, match="not a month"):
        monthly(tmp_path / "out", "2026-13")


def test_corrupt_daily_file_names_the_file(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    path = out / "2026" / "11" / "05" / "ferryman.stats.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as f:
        f.write(b"all|alice|play|1|x|0|0|0|1\n")
    with pytest.raises(UsageError, match="corrupt stats line"):
        monthly(out, "2026-11")
    path.write_bytes(b"not gzip")
    with pytest.raises(UsageError, match=r"ferryman\.stats\.gz"):
        monthly(out, "2026-11")
