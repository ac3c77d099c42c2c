"""Smoke test of ``python -m bench scale --live``: a few compressed steps against the real proxy."""

from __future__ import annotations

import pathlib

import orjson
import pytest

from bench import scale
from bench.forecast import DEFAULT_DATA_DIR, TRACES

HAVE_DATA = (DEFAULT_DATA_DIR / TRACES["nasa"]).exists()


@pytest.mark.skipif(not HAVE_DATA, reason="../shared/data/nasa_1995_per_second.tbz2 is not present")
def test_live_run_loses_no_frame(tmp_path: pathlib.Path) -> None:
    args = ["--live", "--steps", "24", "--step-s", "0.1", "--clients", "4", "--peak-rate", "300"]
    assert scale.main([*args, "--results-dir", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("scale-live-*.json")
    run = orjson.loads(json_path.read_bytes())["run"]
    assert run["steps"] == 24 and len(run["timeline"]) == 24
    assert run["frames_sent"] > 0 and run["frames_lost"] == 0 and run["order_violations"] == 0
    assert run["error_frames"] == 0
    assert "# bench scale --live" in (tmp_path / "scale-live-latest.md").read_text()


def test_live_bad_arguments_are_refused(tmp_path: pathlib.Path) -> None:
    for args in (["--steps", "5"], ["--minutes-per-step", "7"], ["--step-s", "0"]):
        assert scale.main(["--live", *args, "--results-dir", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())
