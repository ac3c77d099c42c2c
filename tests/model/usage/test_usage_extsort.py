"""External merge sort and the line formats: properties over random input."""

from __future__ import annotations

import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

from model.usage import files
from model.usage.extsort import ExternalSort

lines = st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=200)


@settings(max_examples=40, deadline=None)
@given(lines, st.integers(min_value=50, max_value=2000), st.integers(min_value=2, max_value=4))
def test_external_sort_is_sorted_in_byte_order(data: list[bytes], memory_bytes: int, fan_in: int) -> None:
    with ExternalSort(memory_bytes=memory_bytes, fan_in=fan_in) as s:
        s.extend(data)
        out = list(s.sorted())
    assert out == sorted(data)  # bytes compare as unsigned bytes: C-locale order


def test_external_sort_spills_runs_and_cleans_up(tmp_path: pathlib.Path) -> None:
    data = [f"{(i * 7919) % 1000:04d}|x\n".encode() for i in range(1000)]
    with ExternalSort(tmp_path, memory_bytes=4000, fan_in=3) as s:
        s.extend(data)
        out = list(s.sorted())
        assert s.runs_written > 10  # several passes with fan-in 3
    assert out == sorted(data)
    assert list(tmp_path.iterdir()) == []


def test_byte_order_is_not_a_locale_order() -> None:
    data = [b"b\n", b"B\n", b"a\n", b"\xc3\xa9\n", b"A\n", b"_\n"]
    with ExternalSort() as s:
        s.extend(data)
        assert list(s.sorted()) == [b"A\n", b"B\n", b"_\n", b"a\n", b"b\n", b"\xc3\xa9\n"]


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_escape_round_trips_and_hides_separators(name: str) -> None:
    escaped = files.escape(name)
    assert files.unescape(escaped) == name
    assert "|" not in escaped and all(ord(c) >= 0x20 and c != "\x7f" for c in escaped)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=20))
def test_text_sort_is_utf8_byte_order(names: list[str]) -> None:
    names = [n for n in names if not any(0xD800 <= ord(c) <= 0xDFFF for c in n)]  # valid Unicode only
    by_text = sorted(names)
    files.sort_lines(names)
    assert names == by_text == sorted(by_text, key=lambda n: n.encode("utf-8"))
