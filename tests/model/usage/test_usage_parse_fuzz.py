"""Remote garbage costs a bad-line report, never an exception: random lines through both scanners."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from model.usage.parse import scan_combined, scan_ferryman

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
KEYS = ("ts", "client_ip", "session", "client_id", "resource", "status", "count", "bytes_in", "bytes_out")
records = st.fixed_dictionaries(
    {},
    optional={
        **{k: json_values for k in KEYS},
        "ts": st.sampled_from(["2026-11-10T10:00:00.000000Z", "2026-11-10T10:00:00Z", "x" * 27])
        | json_values,
    },
)


def _scan(scanner, block: list[bytes]) -> tuple[int, int, list[tuple[int, str]]]:
    added: list[tuple] = []
    bad: list[tuple[int, str]] = []
    used, other, _ = scanner(
        block, 0, 1 << 62, lambda *rec: added.append(rec), lambda i, r: bad.append((i, r)), {}
    )
    assert used == len(added) and used + other + len(bad) == len(block)
    return used, other, bad


@settings(max_examples=80, deadline=None)
@given(st.lists(records, max_size=5), st.lists(st.binary(max_size=60), max_size=5))
def test_access_log_scanner_never_raises(objs: list[dict], raw: list[bytes]) -> None:
    # The standard library writes what orjson refuses (huge integers, lone surrogates): more garbage.
    block = [json.dumps(o).encode() + b"\n" for o in objs] + [r + b"\n" for r in raw]
    _, _, bad = _scan(scan_ferryman, block)
    assert all(isinstance(reason, str) and reason for _, reason in bad)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.text(alphabet='0123456789 -[]/:+"?./abcMayJun²٣\\\t', max_size=90)
        | st.just('1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 12 "-" "x"'),
        max_size=6,
    )
)
def test_combined_scanner_never_raises(lines: list[str]) -> None:
    _scan(scan_combined, [(x + "\n").encode() for x in lines])
