"""``ferryman usage ...``: exit codes, messages, never a traceback; metadata and carried-file errors."""

from __future__ import annotations

import gzip
import pathlib

import pytest

from model.usage.errors import UsageError
from model.usage.metadata import MetadataError, load_metadata, metadata_from
from proxy.cli import main
from tests.model.usage.helpers import daily, line, write_log

DAY = "2026-11-10"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["usage", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_daily_monthly_groom_from_the_command_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "access.log", [line(f"{DAY}T10:00:00", client_id="alice"), "oops"])
    out = tmp_path / "usage"
    code, stdout, stderr = run(["daily", "--date", DAY, "--input", str(log), "--out", str(out)], capsys)
    assert code == 0
    assert stdout.startswith("2026-11-10: 2 lines read, 1 of the day, 1 bad; 1 clients, 1 requests")
    assert f"  {log}:2: not JSON" in stderr and "Traceback" not in stderr
    code, stdout, stderr = run(["monthly", "--month", "2026-11", "--out", str(out), "--json"], capsys)
    assert code == 0 and '"clients": 1' in stdout
    assert "no daily files for 29 day(s)" in stderr
    code, stdout, _ = run(
        ["groom", "--out", str(out), "--retention-days", "1", "--today", "2026-11-20"], capsys
    )
    assert (code, stdout.splitlines()[0]) == (0, "removed 1 day(s) (4 files); kept 0 day(s)")


def test_bad_lines_are_capped_on_stderr(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "access.log", ["{oops"] * 25)
    code, _, stderr = run(["daily", "--date", DAY, "--input", str(log), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert "25 bad line(s) skipped" in stderr and stderr.count(": not JSON") == 20
    assert "... and 5 more (the first 25 are in" in stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["daily", "--date", "2026-02-30", "--input", "{log}", "--out", "{out}"], "not a date (YYYY-MM-DD)"),
        (["daily", "--date", DAY, "--input", "{tmp}/missing.log", "--out", "{out}"], "cannot read input"),
        (
            ["daily", "--date", DAY, "--input", "{log}", "--out", "{out}", "--time-zone", "Mars/Base"],
            "unknown IANA",
        ),
        (["daily", "--date", DAY, "--input", "{log}"], "--out DIR is required"),
        (["daily", "--date", DAY, "--out", "{out}"], "--input FILE is required"),
        (["daily", "--date", DAY, "--input", "{log}", "--out", "{out}", "--source", "../x"], "source '../x'"),
        (
            ["daily", "--date", DAY, "--input", "{log}", "--out", "{out}", "--session-timeout-s", "0"],
            "positive",
        ),
        (
            ["daily", "--date", DAY, "--input", "{log}", "--out", "{out}", "--metadata", "{log}"],
            "unknown keys 'ts'",
        ),
        (["daily", "--date", DAY, "--input", "{log}", "-c", "{tmp}/nope.yaml"], "cannot read"),
        (["monthly", "--month", "2026-11", "--out", "{out}"], "no daily files for 2026-11"),
        (["monthly", "--month", "11/2026", "--out", "{out}"], "not a month"),
        (["groom", "--out", "{out}", "--retention-days", "0"], "retention must be at least one day"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    log = write_log(tmp_path / "access.log", [line(f"{DAY}T10:00:00")])
    fill = {"log": str(log), "out": str(tmp_path / "out"), "tmp": str(tmp_path)}
    code, _, stderr = run([a.format(**fill) for a in argv], capsys)
    assert code == 1
    assert stderr.startswith("ferryman usage: error: ") and message in stderr
    assert "Traceback" not in stderr


def test_options_from_the_proxy_configuration(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "access.log", [line(f"{DAY}T10:00:00", client_id="alice")])
    config = tmp_path / "ferryman.yaml"
    config.write_text(
        "global:\n"
        f"  access_log: {log}\n"
        "listeners:\n  - {name: play, bind: '127.0.0.1:7000', mode: tcp, pool: game}\n"
        "pools:\n  - name: game\n    servers:\n      - {name: s1, address: '127.0.0.1:9001'}\n"
        f"usage:\n  output_dir: {tmp_path / 'from-config'}\n  source: edge1\n"
    )
    code, _, stderr = run(["daily", "-c", str(config), "--date", DAY], capsys)
    assert code == 0, stderr
    assert (tmp_path / "from-config" / "2026" / "11" / "10" / "edge1.stats.gz").exists()
    config.write_text("listeners: []\n")
    code, _, stderr = run(["daily", "-c", str(config), "--date", DAY], capsys)
    assert code == 1 and "invalid configuration" in stderr and "Traceback" not in stderr


def test_usage_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run([], capsys)
    assert code == 2 and "daily" in stderr and "monthly" in stderr and "groom" in stderr


def test_metadata_files(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "m.yaml"
    good.write_text("clients:\n  alice: gold\n  42: free\nresources: [play]\n")
    meta = load_metadata(good)
    assert meta.group("alice", "play") == "gold" and meta.group("42", "play") == "free"
    assert meta.group("alice", "gone") == "unknown" and meta.group("bob", "play") == "unknown"
    as_json = tmp_path / "m.json"
    as_json.write_text('{"clients": {"alice": "gold"}}')
    assert load_metadata(as_json).group("alice", "anything") == "gold"
    with pytest.raises(MetadataError) as exc:
        metadata_from({"clients": {"a": "unknown", "b": ""}, "resources": "play", "extra": 1}, "m.yaml")
    assert str(exc.value) == (
        "m.yaml: unknown key 'extra' (expected 'clients', 'resources'); "
        "clients.a: group name 'unknown' is reserved; clients.b: group '' is not a non-empty string; "
        "resources: expected a list of strings"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("clients: [\n")
    with pytest.raises(MetadataError, match="not valid YAML"):
        load_metadata(broken)


def test_a_corrupt_carried_sessions_file_is_an_error(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    prev = out / "2026" / "11" / "09"
    prev.mkdir(parents=True)
    with gzip.open(prev / "ferryman.sessions.gz", "wb") as f:
        f.write(b'{"key": "s1"}\n')
    log = write_log(tmp_path / "access.log", [line(f"{DAY}T10:00:00")])
    with pytest.raises(UsageError, match=r"not a carried session.*re-run the previous day"):
        daily(out, DAY, log)


def test_a_damaged_gzip_input_is_a_clean_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = gzip.compress("".join(line(f"{DAY}T10:00:{s:02d}") + "\n" for s in range(60)).encode())
    truncated = tmp_path / "access.log.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    code, _, stderr = run(
        ["daily", "--date", DAY, "--input", str(truncated), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 1 and f"cannot read input {truncated}" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "o" / "2026" / "11" / "10" / "ferryman.stats.gz").exists()  # nothing half-done
