"""The daily job on hand-computed days: counts, double clicks, sessions, bad lines."""

from __future__ import annotations

import pathlib

import pytest

from model.usage import reader
from tests.model.usage.helpers import carried, daily, ips, line, stats, write_log

DAY = "2026-11-10"


def test_basic_day(tmp_path: pathlib.Path) -> None:
    log = write_log(
        tmp_path / "access.log",
        [
            line("2026-11-09T23:00:00", session="old", ip="10.0.0.9"),  # another day: only counted as such
            # Session A logs in on its second request: all of it belongs to alice.
            line(f"{DAY}T10:00:00", session="A", ip="10.0.0.1", resource="hello", bytes_in=10, bytes_out=100),
            line(
                f"{DAY}T10:00:05",
                session="A",
                client_id="alice",
                ip="10.0.0.1",
                resource="login",
                bytes_in=20,
            ),
            line(f"{DAY}T10:01:00", session="A", client_id="alice", ip="10.0.0.1", count=3, bytes_out=300),
            line(f"{DAY}T10:05:00", session="A", client_id="alice", ip="10.0.0.1", count=2, bytes_out=200),
            # Session B never logs in: its client is its address.
            line(f"{DAY}T11:00:00", session="B", ip="10.0.0.2", resource="hello"),
            # tcp mode: no session id, the address is the session key; 40 s apart, both count.
            line(f"{DAY}T12:00:00", session=None, ip="10.0.0.3", bytes_in=5),
            line(f"{DAY}T12:00:40", session=None, ip="10.0.0.3", bytes_in=6),
        ],
    )
    r = daily(tmp_path / "out", DAY, log)
    assert (r.lines_read, r.lines_used, r.lines_other_days, r.bad_lines) == (8, 7, 1, 0)
    assert (r.sessions_started, r.sessions_ended, r.sessions_carried) == (3, 3, 0)
    assert (r.clients, r.requests, r.suppressed, r.denied) == (3, 10, 0, 0)
    # group|client|resource|requests|suppressed|denied|bytes_in|bytes_out|sessions, in byte order
    assert stats(tmp_path / "out", DAY) == [
        "all|10.0.0.2|hello|1|0|0|0|0|1",
        "all|10.0.0.3|play|2|0|0|11|0|1",
        "all|alice|hello|1|0|0|10|100|1",
        "all|alice|login|1|0|0|20|0|1",
        "all|alice|play|5|0|0|0|500|1",
    ]
    assert ips(tmp_path / "out", DAY) == ["10.0.0.1|7|0", "10.0.0.2|1|0", "10.0.0.3|2|0"]
    assert carried(tmp_path / "out", DAY) == []


def test_double_click_chains(tmp_path: pathlib.Path) -> None:
    t = f"{DAY}T10:00"
    lines = [
        line(f"{t}:00", resource="buy"),  # counted
        line(f"{t}:20", resource="buy"),  # 20 s after the last buy: not counted
        line(f"{t}:21", resource="look"),  # another resource: counted
        line(f"{t}:40", resource="look"),  # 19 s after the last look: not counted
        line(f"{t}:45", resource="buy", count=2),  # 25 s after the last (uncounted) buy: chain goes on
        line(f"{DAY}T10:01:20", resource="buy"),  # 35 s later: counted
        line(f"{DAY}T10:01:50", resource="buy"),  # exactly 30 s: outside the window, counted
        line(f"{DAY}T10:01:51", resource="buy"),  # 1 s: not counted
        line(f"{t}:05", session="other", resource="buy"),  # other session: its own first click
    ]
    log = write_log(tmp_path / "access.log", lines)
    r = daily(tmp_path / "out", DAY, log)
    assert stats(tmp_path / "out", DAY) == [
        "all|10.0.0.1|buy|4|4|0|0|0|2",  # s1: 3 counted + 4 suppressed; other: 1 counted
        "all|10.0.0.1|look|1|1|0|0|0|1",
    ]
    # Per IP every request counts, double clicks included: 9 lines, one of them with count 2.
    assert ips(tmp_path / "out", DAY) == ["10.0.0.1|10|0"]
    assert (r.requests, r.suppressed) == (5, 5)

    off = daily(tmp_path / "off", DAY, log, double_click_window_s=0)
    assert stats(tmp_path / "off", DAY) == ["all|10.0.0.1|buy|8|0|0|0|0|2", "all|10.0.0.1|look|2|0|0|0|0|1"]
    assert off.suppressed == 0


def test_session_timeout_and_late_login(tmp_path: pathlib.Path) -> None:
    lines = [
        line(f"{DAY}T08:00:00", resource="hello"),
        line(f"{DAY}T08:29:59", resource="play"),  # 29:59 later: same session
        line(f"{DAY}T08:59:59", resource="play", client_id="bob"),  # exactly 30 min: a new session
        line(f"{DAY}T09:00:00", resource="play", status="denied"),  # denied requests are counted apart
    ]
    log = write_log(tmp_path / "access.log", lines)
    r = daily(tmp_path / "out", DAY, log)
    assert r.sessions_started == 2
    assert stats(tmp_path / "out", DAY) == [
        "all|10.0.0.1|hello|1|0|0|0|0|1",
        "all|10.0.0.1|play|1|0|0|0|0|1",
        "all|bob|play|1|1|1|0|0|1",  # the denied one came 1 s after: a double click, still denied
    ]
    assert ips(tmp_path / "out", DAY) == ["10.0.0.1|4|1"]


def test_malformed_lines_are_reported_with_line_numbers(tmp_path: pathlib.Path) -> None:
    good = line(f"{DAY}T10:00:00")
    bad = [
        "not json at all",
        "",
        "[1, 2, 3]",
        '{"client_ip": "10.0.0.1", "resource": "play"}',
        line("yesterday"),
        line(f"{DAY}T10:00:01", count="3"),
        line(f"{DAY}T10:00:02", bytes_in=-5),
        line(f"{DAY}T10:00:03", client_id=7),
        line(f"{DAY}T10:00:04", resource=None),
        '{"ts": "2026-11-10T10:00:05Z", "client_ip": "10.0.0.1", "resource": "pl',
    ]
    log = write_log(tmp_path / "access.log", [good, *bad, good])
    r = daily(tmp_path / "out", DAY, log)
    assert (r.lines_read, r.lines_used, r.bad_lines) == (12, 2, 10)
    assert [(b.line, b.reason) for b in r.bad_samples] == [
        (2, "not JSON"),
        (3, "empty line"),
        (4, "not a JSON object"),
        (5, "no ts"),
        (6, "ts is not an ISO-8601 time: yesterday.000000Z"),
        (7, "count is not a non-negative integer: '3'"),
        (8, "bytes_in is not a non-negative integer: -5"),
        (9, "client_id is not a string: 7"),
        (10, "resource is not a string: None"),
        (11, "not JSON"),
    ]
    assert all(b.path == str(log) for b in r.bad_samples)
    # The good lines around them still count (the second is a double click of the first).
    assert stats(tmp_path / "out", DAY) == ["all|10.0.0.1|play|1|1|0|0|0|1"]


def test_other_spellings_of_ts_are_read(tmp_path: pathlib.Path) -> None:
    log = write_log(
        tmp_path / "access.log",
        [
            line(f"{DAY}T10:00:00").replace(f"{DAY}T10:00:00.000000Z", f"{DAY}T11:00:00+01:00"),
            line(f"{DAY}T10:00:40").replace(f"{DAY}T10:00:40.000000Z", f"{DAY}T10:00:40Z"),
        ],
    )
    r = daily(tmp_path / "out", DAY, log)
    assert (r.bad_lines, r.requests, r.suppressed) == (0, 2, 0)


def test_seek_finds_the_day_in_a_long_file_and_keeps_absolute_line_numbers(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "SEEK_SPAN_BYTES", 4096)
    monkeypatch.setattr(reader, "SEEK_SLACK_S", 600)
    monkeypatch.setattr(reader, "BLOCK_BYTES", 4096)
    lines = []
    for day in ("2026-11-08", "2026-11-09", DAY, "2026-11-11"):
        for minute in range(0, 24 * 60, 10):  # 144 lines a day, one every 10 minutes
            h, m = divmod(minute, 60)
            lines.append(line(f"{day}T{h:02d}:{m:02d}:00", session=f"{day}-{minute}"))
    bad_at = 2 * 144 + 72  # DAY at 12:00
    lines[bad_at] = "garbage"
    log = write_log(tmp_path / "access.log", lines)
    r = daily(tmp_path / "out", DAY, log)
    assert r.inputs[0].start_offset > 0
    assert r.lines_read < len(lines) // 2  # it did not read the whole file
    assert (r.lines_used, r.bad_lines) == (143, 1)
    assert [b.line for b in r.bad_samples] == [bad_at + 1]
    whole = daily(tmp_path / "whole", DAY, log, seek=False)
    assert whole.lines_read == len(lines)
    assert stats(tmp_path / "whole", DAY) == stats(tmp_path / "out", DAY)


def test_gzip_input_and_several_inputs(tmp_path: pathlib.Path) -> None:
    import gzip

    first = write_log(tmp_path / "a.log", [line(f"{DAY}T10:00:00", resource="hello")])
    second = tmp_path / "b.log.gz"
    with gzip.open(second, "wt") as f:
        f.write(line(f"{DAY}T10:00:10", resource="play", client_id="alice") + "\n")
    r = daily(tmp_path / "out", DAY, [first, second])
    assert [i.format for i in r.inputs] == ["ferryman", "ferryman"]
    assert stats(tmp_path / "out", DAY) == ["all|alice|hello|1|0|0|0|0|1", "all|alice|play|1|0|0|0|0|1"]


def test_names_with_separators_are_escaped(tmp_path: pathlib.Path) -> None:
    log = write_log(
        tmp_path / "access.log",
        [
            line(f"{DAY}T10:00:00", client_id="a|b", resource="50%\nx"),
            line(f"{DAY}T10:00:00", session="s2", client_id="é", resource="r"),
        ],
    )
    daily(tmp_path / "out", DAY, log)
    # "é" is 0xC3 0xA9 in UTF-8: after every ASCII byte.
    assert stats(tmp_path / "out", DAY) == ["all|a%7Cb|50%25%0Ax|1|0|0|0|0|1", "all|é|r|1|0|0|0|0|1"]


def test_migration_records_in_the_access_log_are_neither_requests_nor_bad_lines(tmp_path: pathlib.Path) -> None:
    import orjson

    migration = orjson.dumps(
        {"ts": "2026-11-10T10:00:01.000000Z", "kind": "migration", "listener": "play", "outcome": "committed",
         "sid": "s1", "source": "a", "target": "b", "pause_s": 0.0002}
    ).decode()  # fmt: skip
    log = write_log(tmp_path / "access.log", [line("2026-11-10T10:00:00"), migration, line("2026-11-10T10:00:02")])
    result = daily(tmp_path / "out", "2026-11-10", log)
    assert result.bad_lines == 0 and result.lines_used == 2
