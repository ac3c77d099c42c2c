"""nginx/Apache combined-format input: parsing, sessions by address and user agent, real lines."""

from __future__ import annotations

import os
import pathlib

import pytest

from model.usage.parse import BadLine, clf_to_us, combined_record
from tests.model.usage.helpers import HERE, daily, monthly, report, stats, write_log

EXCERPT = HERE / "apache_excerpt.log"  # 19 lines of ../shared/data/apache_logs_2015.log
# The real data beside the checkout (override the folder with FERRYMAN_DATA_DIR).
DATA_DIR = pathlib.Path(os.environ.get("FERRYMAN_DATA_DIR", HERE.parents[2] / ".." / "shared" / "data"))
SHARED_LOG = DATA_DIR / "apache_logs_2015.log"
UA = "Mozilla/5.0 (X11; Linux x86_64)"


def clf(
    ip: str, when: str, request: str, status: int = 200, size: str = "100", user: str = "-", ua: str = UA
) -> str:
    return f'{ip} - {user} [{when} +0000] "{request}" {status} {size} "-" "{ua}"'


def test_combined_record_fields() -> None:
    rec = combined_record(
        clf("1.2.3.4", "17/May/2015:10:05:03", "GET /a/b?x=1 HTTP/1.1", 401, "-", user="bob")
    )
    t_us, key, client_id, ip, resource, count, denied, bytes_in, bytes_out = rec
    assert t_us == clf_to_us("17/May/2015:10:05:03 +0000") == 1_431_857_103_000_000
    assert (key, client_id, ip, resource) == (f"1.2.3.4\0{UA}", "bob", "1.2.3.4", "/a/b")
    assert (count, denied, bytes_in, bytes_out) == (1, 1, 0, 0)
    # Common log format (no referer, no agent), a quote inside the request, another zone.
    rec = combined_record('5.6.7.8 - - [17/May/2015:12:05:03 +0200] "GET /say\\" hi HTTP/1.0" 200 5')
    assert rec[0] == 1_431_857_103_000_000 and rec[4] == '/say\\"' and rec[8] == 5
    # A request that is not a request line is its own resource.
    assert combined_record(clf("1.2.3.4", "17/May/2015:10:05:03", "-", 408))[4] == "-"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1.2.3.4 - -", "too few fields"),
        (
            '1.2.3.4 - - 17/May/2015:10:05:03 +0000 "GET / HTTP/1.1" 200 1',
            "no [time] followed by a quoted request",
        ),
        (clf("1.2.3.4", "17/Mai/2015:10:05:03", "GET / HTTP/1.1"), "bad time [17/Mai/2015:10:05:03 +0000]"),
        (clf("1.2.3.4", "31/Feb/2015:10:05:03", "GET / HTTP/1.1"), "bad time [31/Feb/2015:10:05:03 +0000]"),
        ('1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" OK 1', "no status after the request"),
        (clf("1.2.3.4", "17/May/2015:10:05:03", "GET / HTTP/1.1", size="lots"), "size is not a number: lots"),
    ],
)
def test_combined_bad_lines(text: str, reason: str) -> None:
    with pytest.raises(BadLine) as exc:
        combined_record(text)
    assert str(exc.value) == reason


def test_sessions_by_address_and_agent(tmp_path: pathlib.Path) -> None:
    day = "2015-05-17"
    log = write_log(
        tmp_path / "access.log",
        [
            clf("1.2.3.4", "17/May/2015:10:00:00", "GET /page HTTP/1.1"),
            clf("1.2.3.4", "17/May/2015:10:00:10", "GET /page HTTP/1.1"),  # double click
            clf("1.2.3.4", "17/May/2015:10:00:10", "GET /page HTTP/1.1", ua="curl/8"),  # other agent
            clf("1.2.3.4", "17/May/2015:10:00:20", "GET /page?again HTTP/1.1", user="ann"),  # logs in
            clf("1.2.3.4", "17/May/2015:10:00:30", "GET /secret HTTP/1.1", 403, "-"),
            "garbage",
        ],
    )
    r = daily(tmp_path / "out", day, log)
    assert [i.format for i in r.inputs] == ["combined"]
    assert (r.bad_lines, r.bad_samples[0].line, r.bad_samples[0].reason) == (1, 6, "too few fields")
    assert stats(tmp_path / "out", day) == [
        "all|1.2.3.4|/page|1|0|0|0|100|1",  # the curl session
        "all|ann|/page|1|2|0|0|300|1",  # the browser session, whose user logged in at 10:00:20
        "all|ann|/secret|1|0|1|0|0|1",
    ]


def test_real_apache_excerpt(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    for day in ("2015-05-17", "2015-05-18", "2015-05-19", "2015-05-20"):
        r = daily(out, day, EXCERPT, source="apache")
        assert r.bad_lines == 0
    # 19 May: one address, one agent, two sessions (03:05 and, an hour later, 04:05); a spider.
    assert stats(out, "2015-05-19", "apache") == [
        "all|180.153.236.175|/articles/dynamic-dns-with-dhcp/|1|0|0|0|18848|1",
        "all|95.82.59.254|/favicon.ico|1|0|0|0|3638|1",
        "all|95.82.59.254|/images/jordan-80.png|1|0|0|0|6146|1",
        "all|95.82.59.254|/images/web/2009/banner.png|1|0|0|0|52315|1",
        "all|95.82.59.254|/reset.css|1|0|0|0|1015|1",
    ]
    monthly(out, "2015-05", top_n=3)
    month = report(out, "2015-05")
    assert month["totals"]["total"] + month["totals"]["suppressed"] == 19
    assert month["top_requests"] == [
        {"ip": "83.149.9.216", "requests": 12},
        {"ip": "95.82.59.254", "requests": 4},
        {"ip": "180.153.236.175", "requests": 1},
    ]
    assert month["top_denied"] == [{"ip": "208.115.113.88", "denied": 1}, {"ip": "94.153.9.168", "denied": 1}]


@pytest.mark.skipif(not SHARED_LOG.exists(), reason="needs ../shared/data/apache_logs_2015.log")
def test_whole_apache_log_of_2015(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    used = 0
    for day in ("2015-05-16", "2015-05-17", "2015-05-18", "2015-05-19", "2015-05-20", "2015-05-21"):
        r = daily(out, day, SHARED_LOG, source="apache")
        assert r.bad_lines == 0
        used += r.lines_used
    assert used == 10_000
    monthly(out, "2015-05")
    month = report(out, "2015-05")
    assert month["totals"]["total"] + month["totals"]["suppressed"] == 10_000
    assert len(month["top_denied"]) == 2  # the log has two 403s and no 401
    assert len(month["top_requests"]) == 100
