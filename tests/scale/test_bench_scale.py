"""Smoke test of ``python -m bench scale``: a short stretch of the NASA trace, end to end.

Nothing here asserts the benchmark's figures (the full run is for that): only that every policy is
simulated, scored and reported, and that bad arguments are refused.
"""

from __future__ import annotations

import pathlib

import orjson
import pytest

from bench import scale
from bench.forecast import DEFAULT_DATA_DIR, TRACES

HAVE_DATA = (DEFAULT_DATA_DIR / TRACES["nasa"]).exists()


@pytest.mark.skipif(not HAVE_DATA, reason="../shared/data/nasa_1995_per_second.tbz2 is not present")
def test_main_writes_json_and_markdown(tmp_path: pathlib.Path) -> None:
    code = scale.main(
        [
            "--traces", "nasa",
            "--max-steps", "400",
            "--warm-steps", "100",
            "--delays-s", "300",
            "--headrooms", "0.1,0.3",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    (json_path,) = tmp_path.glob("scale-*.json")
    data = orjson.loads(json_path.read_bytes())
    (run,) = data["runs"]
    assert run["trace"] == "nasa" and run["scored_steps"] == 300
    (delay,) = run["delays"]
    kinds = [r["kind"] for r in delay["rows"]]
    assert kinds == ["predictive", "reactive", "predictive", "reactive", "core+perfect forecast", "perfect"]
    for row in delay["rows"]:
        assert row["steps"] == 300 and row["server_minutes"] >= 300
    perfect = delay["rows"][-1]
    assert perfect["under_provisioned_minutes"] == 0
    assert set(delay["goal"]) >= {"met", "ratio", "reactive_headroom", "predictive_headroom"}
    assert len(delay["frontier"]) == 2
    md = (tmp_path / "scale-latest.md").read_text()
    assert "# bench scale" in md and "provisioning delay 5 min" in md


@pytest.mark.parametrize(
    "args",
    [["--traces", "nope"], ["--headrooms", "1.5"], ["--delays-s", "0"], ["--delays-s", "x"]],
)
def test_bad_arguments_are_refused(args: list[str], tmp_path: pathlib.Path) -> None:
    assert scale.main([*args, "--results-dir", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())
