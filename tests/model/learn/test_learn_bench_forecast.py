"""``bench forecast`` plumbing: aggregation, metrics, and one tiny end-to-end run on a fake trace."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest

import bench.forecast as bf


def test_aggregate_sums_steps_and_drops_the_partial_last_one() -> None:
    counts = np.arange(10)
    assert bf.aggregate(counts, 3).tolist() == [3.0, 12.0, 21.0]


def test_smape_and_mae_by_hand() -> None:
    y = np.array([0.0, 10.0, 10.0])
    f = np.array([0.0, 30.0, 10.0])
    assert bf.mae(y, f) == pytest.approx(20 / 3)
    assert bf.smape(y, f) == pytest.approx(100 * (0 + 2 * 20 / 40 + 0) / 3)
    assert math.isnan(bf.mae(np.array([]), np.array([])))


def test_errors_pair_each_forecast_with_its_target() -> None:
    series = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    fc = np.arange(10.0).reshape(5, 2)  # fc[t, h-1]: forecast made at t for t + h
    y, f = bf.errors(series, fc, 2, warm=1)
    assert y.tolist() == [4.0, 5.0] and f.tolist() == [3.0, 5.0]


def test_a_tiny_run_on_a_fake_trace_writes_json_and_markdown(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    hours = 50
    rng = np.random.default_rng(1)
    t = np.arange(hours * 3600)
    rate = 2.0 + 1.5 * np.sin(2 * np.pi * t / 86400)
    (tmp_path / "workload.txt").write_text(" ".join(map(str, rng.poisson(rate))))
    subprocess.run(
        ["tar", "-cjf", str(data / bf.TRACES["nasa"]), "-C", str(tmp_path), "workload.txt"], check=True
    )
    results = tmp_path / "results"
    argv = ["--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(results)]
    argv += ["--traces", "nasa", "--steps-s", "3600"]
    assert bf.main(argv) == 0
    [json_path] = results.glob("forecast-*.json")
    result = json.loads(json_path.read_text())
    [run] = result["runs"]
    assert run["steps"] == hours and run["warmup_steps"] == 24
    assert set(run["models"]) == {
        "naive",
        "seasonal_naive",
        "exp_smoothing",
        "holt_winters",
        "profile_smoothing",
        "snarimax",
        "analog",
        "combination",
        "selected",
    }
    assert run["models"]["naive"]["mae_vs_naive"]["5"] == 1.0
    assert "## nasa, 60-minute steps" in (results / "forecast-latest.md").read_text()
    assert (tmp_path / "cache" / "nasa" / "workload.npy").exists()  # parsed once, reused next time
    assert bf.main([*argv, "--traces", "nope"]) == 2
    assert bf.main([*argv, "--steps-s", "7"]) == 2
