"""``ferryman metrics ingest|query|rollup|groom`` end to end on a file database."""

from __future__ import annotations

import argparse
import json

import pytest

from model.tsdb import cli

LINES = [
    '{"ts": "2024-03-04T00:00:30Z", "metric": "bytes_in", "entity": "game/s1", "value": 100}',
    '{"ts": "2024-03-04T00:01:10Z", "metric": "bytes_in", "entity": "game/s1", "value": 7}',
    '{"ts": "2024-03-04T00:01:50Z", "metric": "bytes_in", "entity": "game/s1", "value": 3}',
    "this is not json",
    '{"ts": "2024-03-04T00:02:00Z", "metric": "latency", "entity": "game/s1", "value": 1}',
    "",
    '{"entity": "game/s1", "session": "c1", "start": "2024-03-04T00:01:05Z", "end": "2024-03-04T00:01:15Z"}',
    '{"entity": "game/s1", "session": "c2", "start": "2024-03-04T00:01:40Z", "end": null}',
    '{"ts": "2024-03-04T00:02:10Z", "metric": "bytes_in", "entity": "game/s1"}',
    '{"ts": "2024-03-04T00:02:20Z", "metric": "connect_duration_s", "entity": "game/s1", "value": [0.6, 3]}',
    '{"entity": "game/s1", "session": "c3", "start": "2024-03-04T00:02:00Z", "end": "2024-03-04T00:01:00Z"}',
    '{"ts": "2024-03-04T00:03:59Z", "metric": "bytes_in", "entity": "game/s1", "value": 1}',
    '{"ts": "yesterday", "metric": "bytes_in", "entity": "game/s1", "value": 1}',
]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ferryman")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "backfill.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_ingest_reports_bad_lines_skips_them_and_rolls_up(tmp_path, jsonl, capsys):
    db = tmp_path / "m.db"
    code = run(["metrics", "ingest", str(jsonl), "--db", str(db), "--now", "2024-03-04T01:00:00Z"])
    out, err = capsys.readouterr()
    assert code == 1  # some lines were skipped
    assert f"{jsonl}:4: not JSON" in err
    assert f"{jsonl}:5: unknown metric 'latency'" in err
    assert f"{jsonl}:9: missing 'value'" in err
    assert f"{jsonl}:11: session ends before it starts" in err
    assert f"{jsonl}:13: 'ts':" in err
    assert "Traceback" not in err
    assert "6 events" not in out and "5 events" in out and "2 session records" in out and "5 bad lines" in out

    # The file spans 00:00:30 to 00:04:00: minute 0 is partial (no row), minutes 1-3 are complete.
    code = run(
        [
            "metrics",
            "query",
            "--db",
            str(db),
            "--metric",
            "bytes_in",
            "--entity",
            "game/s1",
            "--from",
            "2024-03-04T00:00:00Z",
            "--to",
            "2024-03-04T00:05:00Z",
            "--json",
        ]
    )
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    assert body["granularity"] == "minute"
    assert [(r["start"], r["value"]) for r in body["rows"]] == [
        ("2024-03-04T00:01:00Z", 10.0),
        ("2024-03-04T00:03:00Z", 1.0),
    ]
    run(
        [
            "metrics",
            "query",
            "--db",
            str(db),
            "--metric",
            "sessions_connected",
            "--entity",
            "game/s1",
            "--from",
            "2024-03-04T00:00:00Z",
            "--to",
            "2024-03-04T00:05:00Z",
        ]
    )
    text = capsys.readouterr().out.splitlines()
    # c1 and c2 never overlap but both were present in minute 1; c2 stays open.
    assert text[0] == "# sessions_connected game/s1 (state, minute rows)"
    assert text[1:4] == ["2024-03-04T00:01:00Z  2", "2024-03-04T00:02:00Z  1", "2024-03-04T00:03:00Z  1"]
    run(
        [
            "metrics",
            "query",
            "--db",
            str(db),
            "--metric",
            "connect_duration_s",
            "--entity",
            "game/s1",
            "--from",
            "2024-03-04T00:02:00Z",
            "--to",
            "2024-03-04T00:03:00Z",
        ]
    )
    assert "2024-03-04T00:02:00Z  0.2" in capsys.readouterr().out


def test_ingest_clean_file_exits_zero_and_reingest_is_late(tmp_path, capsys):
    path = tmp_path / "ok.jsonl"
    path.write_text(
        "".join(
            f'{{"ts": {1_709_510_400 + s}, "metric": "frames_in", "entity": "e", "value": 1}}\n'
            for s in range(0, 180)
        )
    )
    db = tmp_path / "m.db"
    assert run(["metrics", "ingest", str(path), "--db", str(db), "--now", "1709514000"]) == 0
    assert "180 events" in capsys.readouterr().out
    assert run(["metrics", "ingest", str(path), "--db", str(db), "--now", "1709514000"]) == 0
    assert "0 events, 180 too late" in capsys.readouterr().out


def test_rollup_and_groom_commands(tmp_path, jsonl, capsys):
    db = tmp_path / "m.db"
    run(["metrics", "ingest", str(jsonl), "--db", str(db), "--now", "2024-03-04T00:02:00Z"])
    capsys.readouterr()
    assert run(["metrics", "rollup", "--db", str(db), "--now", "2024-03-04T01:00:00Z"]) == 0
    assert capsys.readouterr().out.startswith("rollup wrote ")
    assert (
        run(["metrics", "groom", "--db", str(db), "--now", "2024-04-30T00:00:00Z", "--minute-days", "1"]) == 0
    )
    assert "groom deleted" in capsys.readouterr().out
    run(
        [
            "metrics",
            "query",
            "--db",
            str(db),
            "--metric",
            "bytes_in",
            "--entity",
            "game/s1",
            "--from",
            "2024-03-04T00:00:00Z",
            "--to",
            "2024-03-04T00:05:00Z",
            "--granularity",
            "minute",
        ]
    )
    assert "# note: minute rows older than 1 days were removed by retention" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [
                "metrics",
                "query",
                "--db",
                "{db}",
                "--metric",
                "bytes_in",
                "--entity",
                "e",
                "--from",
                "x",
                "--to",
                "1",
            ],
            "--from/--to",
        ),
        (
            [
                "metrics",
                "query",
                "--db",
                "{missing}",
                "--metric",
                "bytes_in",
                "--entity",
                "e",
                "--from",
                "0",
                "--to",
                "1",
            ],
            "no metrics database",
        ),
        (
            [
                "metrics",
                "query",
                "--db",
                "{db}",
                "--metric",
                "nope",
                "--entity",
                "e",
                "--from",
                "0",
                "--to",
                "1",
            ],
            "unknown metric 'nope'",
        ),
        (["metrics", "rollup", "--db", "{db}", "--now", "later"], "--now"),
        (["metrics", "rollup", "--db", "{db}", "--interval-s", "5", "--now", "0"], "interval_s=1"),
        (["metrics", "ingest", "{missing}", "--db", "{db}"], "no such file"),
        (
            ["metrics", "rollup", "--db", "{db}", "--time-zone", "Nowhere/Land", "--now", "0"],
            "unknown IANA time zone",
        ),
        (["metrics", "groom", "--db", "{db}", "--raw-days", "0", "--now", "0"], "positive number of days"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(tmp_path, capsys, argv, message):
    db = tmp_path / "m.db"
    from model.tsdb import SeriesStore

    SeriesStore(db).close()
    argv = [a.format(db=db, missing=tmp_path / "absent") for a in argv]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith("ferryman metrics: error: ")


def test_corrupt_database_is_reported(tmp_path, capsys):
    db = tmp_path / "junk.db"
    db.write_bytes(b"not a database at all" * 100)
    assert run(["metrics", "rollup", "--db", str(db), "--now", "0"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_wired_into_the_ferryman_cli(tmp_path, capsys):
    from proxy.cli import main

    db = tmp_path / "m.db"
    path = tmp_path / "one.jsonl"
    path.write_text('{"ts": "2024-03-04T00:00:00Z", "metric": "errors", "entity": "e", "value": 1}\n')
    assert main(["metrics", "ingest", str(path), "--db", str(db), "--now", "2024-03-05T00:00:00Z"]) == 0
    assert "1 events" in capsys.readouterr().out
