"""Sessions across midnight, double clicks across midnight, and the month boundary."""

from __future__ import annotations

import pathlib

from model.usage.parse import ferryman_record
from model.usage.sessionize import sessionize
from tests.model.usage.helpers import carried, daily, line, monthly, report, stats, write_log

D1, D2 = "2026-11-10", "2026-11-11"


def test_session_across_midnight_is_counted_on_the_day_it_ends(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    day1 = write_log(
        tmp_path / "d1.log",
        [
            line(f"{D1}T23:20:00", session="Y", client_id="yan"),  # ends 23:50: day 1
            line(f"{D1}T23:30:00", session="Z", client_id="zoe"),  # ends exactly at midnight: day 1
            line(f"{D1}T23:45:00", session="W", client_id="wim"),  # ends 00:15 with no more requests: day 2
            line(f"{D1}T23:50:00", session="X", client_id="alice", bytes_in=1),
            line(f"{D1}T23:59:00", session="X", client_id="alice", bytes_in=2),  # 9 min later: counted
        ],
    )
    day2 = write_log(
        tmp_path / "d2.log",
        [
            line(f"{D2}T00:10:00", session="X", client_id="alice", bytes_in=4),  # 11 min: same session
            line(f"{D2}T00:10:10", session="X", client_id="alice", bytes_in=8),  # double click
        ],
    )
    r1 = daily(out, D1, day1)
    assert stats(out, D1) == ["all|yan|play|1|0|0|0|0|1", "all|zoe|play|1|0|0|0|0|1"]
    assert r1.sessions_carried == 2
    assert carried(out, D1) == [
        {
            "client": "wim",
            "ip": "10.0.0.1",
            "key": "W",
            "last_us": 1_794_354_300_000_000,  # 2026-11-10T23:45:00Z
            "resources": {"play": [1, 0, 0, 0, 0, 1_794_354_300_000_000]},
        },
        {
            "client": "alice",
            "ip": "10.0.0.1",
            "key": "X",
            "last_us": 1_794_355_140_000_000,  # 23:59:00
            "resources": {"play": [2, 0, 0, 3, 0, 1_794_355_140_000_000]},
        },
    ]
    r2 = daily(out, D2, day2)
    assert r2.sessions_restored == 2
    assert stats(out, D2) == ["all|alice|play|3|1|0|15|0|1", "all|wim|play|1|0|0|0|0|1"]
    assert r2.sessions_carried == 0


def test_double_click_across_midnight(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    daily(out, D1, write_log(tmp_path / "d1.log", [line(f"{D1}T23:59:50", resource="buy")]))
    daily(out, D2, write_log(tmp_path / "d2.log", [line(f"{D2}T00:00:10", resource="buy")]))
    assert stats(out, D1) == []
    assert stats(out, D2) == ["all|10.0.0.1|buy|1|1|0|0|0|1"]  # 20 s after the carried click


def test_a_missing_previous_day_is_a_warning(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    r = daily(out, D2, write_log(tmp_path / "d2.log", [line(f"{D2}T00:00:10", resource="buy")]))
    assert len(r.warnings) == 1 and "2026-11-10" in r.warnings[0]
    assert stats(out, D2) == ["all|10.0.0.1|buy|1|0|0|0|0|1"]


def test_month_boundary_carries_nothing(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    last = write_log(tmp_path / "nov30.log", [line("2026-11-30T23:59:50", resource="buy")])
    first = write_log(tmp_path / "dec01.log", [line("2026-12-01T00:00:10", resource="buy")])
    r_last = daily(out, "2026-11-30", last)
    r_first = daily(out, "2026-12-01", first)
    # The session open at the end of November is deemed ended and counted in November ...
    assert r_last.sessions_carried == 0
    assert stats(out, "2026-11-30") == ["all|10.0.0.1|buy|1|0|0|0|0|1"]
    assert carried(out, "2026-11-30") == []
    # ... and December starts afresh: nothing restored, no warning, the click 20 s later counts.
    assert (r_first.sessions_restored, r_first.warnings) == (0, ())
    assert stats(out, "2026-12-01") == ["all|10.0.0.1|buy|1|0|0|0|0|1"]
    monthly(out, "2026-11")
    monthly(out, "2026-12")
    assert report(out, "2026-11")["clients"]["10.0.0.1"]["total"] == 1
    assert report(out, "2026-12")["clients"]["10.0.0.1"]["total"] == 1


def test_month_total_equals_one_pass_over_the_whole_log(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    days = {
        "2026-11-28": [
            line("2026-11-28T12:00:00", session="a", client_id="alice", resource="get"),
            line("2026-11-28T23:58:00", session="b", ip="10.0.0.2", resource="hello"),
            line("2026-11-28T23:59:40", session="b", client_id="bob", ip="10.0.0.2", resource="get", count=2),
        ],
        "2026-11-29": [
            line("2026-11-29T00:00:05", session="b", client_id="bob", ip="10.0.0.2", resource="get"),  # click
            line("2026-11-29T00:20:00", session="b", client_id="bob", ip="10.0.0.2", resource="put"),
            line("2026-11-29T09:00:00", session=None, ip="10.0.0.3", status="denied"),
            line("2026-11-29T23:45:00", session="c", client_id="carol", resource="get"),
        ],
        "2026-11-30": [
            line("2026-11-30T00:05:00", session="c", client_id="carol", resource="get"),
            line("2026-11-30T23:59:59", session="d", client_id="dan", resource="get"),  # open at month end
        ],
    }
    logs = {day: write_log(tmp_path / f"{day}.log", lines) for day, lines in days.items()}
    for day, log in logs.items():
        daily(out, day, log)
    monthly(out, "2026-11")
    month = report(out, "2026-11")

    records = [ferryman_record(x.encode()) for lines in days.values() for x in lines]
    one_pass: dict[str, list[int]] = {}
    for client, _resource, c in sessionize(records, 1800, 30):
        total = one_pass.setdefault(client, [0, 0, 0])
        total[0] += c[0]
        total[1] += c[1]
        total[2] += c[2]
    got = {client: [e["total"], e["suppressed"], e["denied"]] for client, e in month["clients"].items()}
    assert got == one_pass
    # and by hand:
    assert got == {
        "10.0.0.3": [1, 0, 1],
        "alice": [1, 0, 0],
        "bob": [4, 1, 0],  # hello 1 + get 2 (+1 click not counted) + put 1
        "carol": [2, 0, 0],
        "dan": [1, 0, 0],
    }
    assert month["days"] == ["2026-11-28", "2026-11-29", "2026-11-30"]
    assert month["missing_days"][:2] == ["2026-11-01", "2026-11-02"] and len(month["missing_days"]) == 27
