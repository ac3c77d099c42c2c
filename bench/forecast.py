"""``python -m bench forecast``: the aggregate forecasters against naive and seasonal naive, on real traces.

1. Extract the per-second request counts of the NASA 1995 and Twitter 2021 traces
   (``../shared/data/*_per_second.tbz2``, each a ``workload.txt`` of space-separated integers) into a
   cache directory, and sum them into steps of 1 and 5 minutes (a partial last step is dropped).
2. Replay each series online through ``model.learn.Learner``, the class the learner process runs:
   at every step the learner first learns the step's value, then forecasts the next 12 steps
   (prequential evaluation: every forecast is made before its target is seen, no tuning on the
   future).  The forecasts of every forecaster the selector runs are recorded too, so each is judged
   on exactly the same steps.
3. Report MAE and sMAPE at horizons 1, 5 and 12 steps for every forecaster and for the selected
   forecast, as ratios to naive, after a warm-up of one season (a day of steps: the seasonal models
   need it); the coverage of the selector's error band; and the cost per call: ``learn`` is the model
   update, ``forecast`` is computing the 12-step forecast (the selector's row is the whole learner:
   all models plus selection, and serving a forecast with its band).

Goal: the selected forecast beats naive by >= 15% MAE five steps ahead, on both traces.

Writes ``bench/results/forecast-<stamp>.json`` and ``forecast-latest.md``.  The full run takes a
couple of minutes on one core; ``--quick`` replays the first 5,000 steps of each series.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench._common import ROOT, BenchError, fmt_number, machine_info, markdown_table, write_results

TRACES = {"nasa": "nasa_1995_per_second.tbz2", "twitter": "twitter_2021_per_second.tbz2"}
DEFAULT_DATA_DIR = pathlib.Path(os.environ.get("FERRYMAN_DATA_DIR", ROOT.parent / "shared" / "data"))
DEFAULT_CACHE_DIR = ROOT / "bench" / "results" / "cache" / "forecast"
HORIZONS = (1, 5, 12)
MAX_HORIZON = 12
GOAL_HORIZON = 5
GOAL_GAIN = 0.15
DAY_S = 86400
QUICK_STEPS = 5000
SELECTED = "selected"


# -- data -----------------------------------------------------------------------------------------


def extract(data_dir: pathlib.Path, cache_dir: pathlib.Path, trace: str) -> pathlib.Path:
    """``workload.txt`` of ``trace``, extracted with ``tar -xjf`` into ``cache_dir/trace`` once."""
    archive = data_dir / TRACES[trace]
    if not archive.exists():
        raise BenchError(f"{archive} is missing (set --data-dir or FERRYMAN_DATA_DIR)")
    out_dir = cache_dir / trace
    workload = out_dir / "workload.txt"
    if workload.exists() and workload.stat().st_mtime >= archive.stat().st_mtime:
        return workload
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["tar", "-xjf", str(archive), "-C", str(out_dir)], capture_output=True, text=True)
    if done.returncode != 0 or not workload.exists():
        raise BenchError(f"tar -xjf {archive} failed: {done.stderr.strip() or 'no workload.txt inside'}")
    workload.touch()  # mtime now >= the archive's, so the next run reuses it
    return workload


def per_second(workload: pathlib.Path) -> np.ndarray:
    """The per-second counts (cached next to the text as .npy: parsing 5 million integers takes a while)."""
    npy = workload.with_suffix(".npy")
    if npy.exists() and npy.stat().st_mtime >= workload.stat().st_mtime:
        return np.load(npy)
    counts = np.array(workload.read_text().split(), dtype=np.int64)
    if counts.size == 0 or (counts < 0).any():
        raise BenchError(f"{workload}: expected non-negative integer counts")
    np.save(npy, counts)
    return counts


def aggregate(counts: np.ndarray, step_s: int) -> np.ndarray:
    """Sums over consecutive ``step_s``-second steps; the partial last step is dropped."""
    n = len(counts) // step_s
    return counts[: n * step_s].reshape(n, step_s).sum(axis=1).astype(np.float64)


# -- replay and scoring -----------------------------------------------------------------------------


@dataclass
class Replay:
    names: list[str]
    forecasts: dict[str, np.ndarray]  # name -> (steps, MAX_HORIZON): forecast made after learning step t
    lo: np.ndarray  # the selector's band
    hi: np.ndarray
    learn_us: dict[str, float]
    forecast_us: dict[str, float]
    chosen: dict[int, dict[str, int]]  # horizon -> forecaster -> steps it was served at
    wall_s: float


def replay(series: np.ndarray, step_s: int, seed: int) -> Replay:
    from model.learn import Learner

    season = DAY_S // step_s
    learner = Learner(step_s=step_s, season_steps=season, seed=seed, max_horizon=MAX_HORIZON)
    sel = learner.selector
    names = [c.name for c in sel.children]
    n = len(series)
    out = {name: np.zeros((n, MAX_HORIZON)) for name in [*names, SELECTED]}
    lo = np.zeros((n, MAX_HORIZON))
    hi = np.zeros((n, MAX_HORIZON))
    chosen: dict[int, dict[str, int]] = {h: {} for h in HORIZONS}
    observe_s = forecast_s = 0.0
    started = time.perf_counter()
    for t, y in enumerate(series.tolist()):
        t0 = time.perf_counter()
        learner.observe_aggregate(t * step_s, y)
        t1 = time.perf_counter()
        fc = learner.forecast(MAX_HORIZON)
        t2 = time.perf_counter()
        observe_s += t1 - t0
        forecast_s += t2 - t1
        band = np.asarray(fc.points)
        lo[t], out[SELECTED][t], hi[t] = band[:, 1], band[:, 2], band[:, 3]
        for c in sel.children:
            out[c.name][t] = c.forecast(MAX_HORIZON)
        if t >= season:
            for h in HORIZONS:
                if t + h >= n:
                    continue  # its target is past the end: not scored, so not counted
                name = fc.models[h - 1]
                chosen[h][name] = chosen[h].get(name, 0) + 1
    costs = sel.child_costs()
    learn_us = {name: costs[name].learn_us for name in names}
    forecast_us = {name: costs[name].predict_us for name in names}
    learn_us[SELECTED] = 1e6 * observe_s / n
    forecast_us[SELECTED] = 1e6 * forecast_s / n
    return Replay(names, out, lo, hi, learn_us, forecast_us, chosen, time.perf_counter() - started)


def errors(series: np.ndarray, fc: np.ndarray, h: int, warm: int) -> tuple[np.ndarray, np.ndarray]:
    """(target, forecast) pairs for horizon ``h``: forecasts made at t >= warm for step t + h."""
    n = len(series)
    origins = np.arange(warm, n - h)
    return series[origins + h], fc[origins, h - 1]


def mae(y: np.ndarray, f: np.ndarray) -> float:
    return float(np.mean(np.abs(y - f))) if len(y) else math.nan


def smape(y: np.ndarray, f: np.ndarray) -> float:
    """Symmetric MAPE in percent, 0 where target and forecast are both 0 (Makridakis 1993 form)."""
    if not len(y):
        return math.nan
    den = np.abs(y) + np.abs(f)
    terms = np.divide(2.0 * np.abs(y - f), den, out=np.zeros_like(den), where=den > 0)
    return float(100.0 * terms.mean())


def score(series: np.ndarray, rep: Replay, warm: int) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name in [*rep.names, SELECTED]:
        m: dict[str, Any] = {"mae": {}, "smape": {}}
        for h in HORIZONS:
            y, f = errors(series, rep.forecasts[name], h, warm)
            m["mae"][str(h)] = mae(y, f)
            m["smape"][str(h)] = smape(y, f)
        m["learn_us"] = rep.learn_us[name]
        m["forecast_us"] = rep.forecast_us[name]
        models[name] = m
    for m in models.values():
        m["mae_vs_naive"] = {
            str(h): m["mae"][str(h)] / models["naive"]["mae"][str(h)]
            if models["naive"]["mae"][str(h)]
            else math.nan
            for h in HORIZONS
        }
        m["mae_vs_seasonal_naive"] = {
            str(h): m["mae"][str(h)] / models["seasonal_naive"]["mae"][str(h)]
            if models["seasonal_naive"]["mae"][str(h)]
            else math.nan
            for h in HORIZONS
        }
    coverage = {}
    width = {}
    for h in HORIZONS:
        y, lo = errors(series, rep.lo, h, warm)
        _, hi = errors(series, rep.hi, h, warm)
        coverage[str(h)] = float(np.mean((y >= lo) & (y <= hi))) if len(y) else math.nan
        width[str(h)] = float(np.mean(hi - lo)) if len(y) else math.nan
    gain = 1.0 - models[SELECTED]["mae_vs_naive"][str(GOAL_HORIZON)]
    return {
        "models": models,
        "band_coverage": coverage,
        "band_mean_width": width,
        "served": {str(h): rep.chosen[h] for h in HORIZONS},
        "gain_vs_naive_at_goal_horizon": gain,
        "goal_met": bool(gain >= GOAL_GAIN),
    }


# -- report ---------------------------------------------------------------------------------------


def table(run: dict[str, Any]) -> str:
    header = ["forecaster"]
    header += [f"MAE h{h}" for h in HORIZONS] + [f"sMAPE h{h} %" for h in HORIZONS]
    header += [f"vs naive h{h}" for h in HORIZONS] + [
        f"vs s-naive h{GOAL_HORIZON}",
        "learn µs",
        "forecast µs",
    ]
    rows = []
    for name, m in run["models"].items():
        row = [f"**{name}**" if name == SELECTED else name]
        row += [fmt_number(m["mae"][str(h)]) for h in HORIZONS]
        row += [fmt_number(m["smape"][str(h)]) for h in HORIZONS]
        row += [f"{m['mae_vs_naive'][str(h)]:.3f}" for h in HORIZONS]
        row += [f"{m['mae_vs_seasonal_naive'][str(GOAL_HORIZON)]:.3f}"]
        row += [fmt_number(m["learn_us"]), fmt_number(m["forecast_us"])]
        rows.append(row)
    return markdown_table(header, rows)


def markdown(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        "# bench forecast",
        "",
        f"{info['date']} · {info['cpu']} · Python {info['python']} · river {info['packages'].get('river', '?')}"
        f" · numpy {info['packages'].get('numpy', '?')} · commit {info['commit'][:12]}"
        f"{' (dirty)' if info.get('dirty') else ''}",
        "",
        "Prequential replay (learn the step, then forecast the next 12) through `model.learn.Learner`;"
        " errors after a one-day warm-up.  Ratios < 1 beat the baseline.  Goal: selected forecast"
        f" >= {GOAL_GAIN:.0%} lower MAE than naive at h{GOAL_HORIZON}.",
        "",
    ]
    summary = []
    for run in result["runs"]:
        sel = run["models"][SELECTED]
        summary.append(
            [
                run["trace"],
                f"{run['step_s'] // 60} min",
                f"{run['eval_steps']:,}",
                f"{sel['mae_vs_naive'][str(GOAL_HORIZON)]:.3f}",
                f"{run['gain_vs_naive_at_goal_horizon']:.1%}",
                "yes" if run["goal_met"] else "**no**",
                " · ".join(
                    f"{k} {v}"
                    for k, v in sorted(run["served"][str(GOAL_HORIZON)].items(), key=lambda kv: -kv[1])
                ),
                " / ".join(f"{run['band_coverage'][str(h)]:.0%}" for h in HORIZONS),
            ]
        )
    lines.append(
        markdown_table(
            [
                "trace",
                "step",
                "eval steps",
                f"selected/naive MAE h{GOAL_HORIZON}",
                "gain",
                "goal met",
                f"served at h{GOAL_HORIZON} (steps)",
                "90% band coverage h1/h5/h12",
            ],
            summary,
        )
    )
    for run in result["runs"]:
        lines += [
            "",
            f"## {run['trace']}, {run['step_s'] // 60}-minute steps"
            f" ({run['steps']:,} steps, {run['eval_steps']:,} scored, mean {fmt_number(run['mean'])} per step,"
            f" replay {run['wall_s']:.1f} s)",
            "",
            table(run),
        ]
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench forecast",
        description="Aggregate forecasters vs naive and seasonal naive on the NASA 1995 and Twitter 2021 traces.",
    )
    parser.add_argument(
        "--data-dir", type=pathlib.Path, default=DEFAULT_DATA_DIR, help="default ../shared/data"
    )
    parser.add_argument("--cache-dir", type=pathlib.Path, default=DEFAULT_CACHE_DIR, help="extracted traces")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None, help="default bench/results")
    parser.add_argument("--traces", default="nasa,twitter", help="comma-separated: nasa,twitter")
    parser.add_argument("--steps-s", default="60,300", help="step sizes in seconds (each must divide a day)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="replay at most this many steps per series"
    )
    parser.add_argument("--quick", action="store_true", help=f"same as --max-steps {QUICK_STEPS}")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    traces = [t for t in args.traces.split(",") if t]
    steps = [int(s) for s in args.steps_s.split(",") if s]
    unknown = [t for t in traces if t not in TRACES]
    if unknown or not traces:
        print(f"bench forecast: unknown traces {unknown} (known: {', '.join(TRACES)})", file=sys.stderr)
        return 2
    if any(s <= 0 or DAY_S % s for s in steps) or not steps:
        print("bench forecast: every step must be a positive divisor of 86400 s", file=sys.stderr)
        return 2
    max_steps = QUICK_STEPS if args.quick and args.max_steps is None else args.max_steps
    try:
        result = run(args, traces, steps, max_steps)
    except BenchError as exc:
        print(f"bench forecast: {exc}", file=sys.stderr)
        return 1
    json_path, md_path = write_results("forecast", result, markdown(result), **_out(args))
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


def _out(args: argparse.Namespace) -> dict[str, Any]:
    return {"out_dir": args.results_dir} if args.results_dir else {}


def run(
    args: argparse.Namespace, traces: list[str], steps: list[int], max_steps: int | None
) -> dict[str, Any]:
    runs = []
    for trace in traces:
        counts = per_second(extract(args.data_dir, args.cache_dir, trace))
        for step_s in steps:
            series = aggregate(counts, step_s)
            if max_steps is not None:
                series = series[:max_steps]
            season = DAY_S // step_s
            if len(series) <= season + MAX_HORIZON:
                raise BenchError(
                    f"{trace} at {step_s} s: {len(series)} steps is not more than a day; raise --max-steps"
                )
            print(
                f"bench forecast: {trace}, {step_s} s steps, {len(series):,} steps ...",
                file=sys.stderr,
                flush=True,
            )
            rep = replay(series, step_s, args.seed)
            scored = score(series, rep, warm=season)
            runs.append(
                {
                    "trace": trace,
                    "step_s": step_s,
                    "steps": len(series),
                    "eval_steps": len(series) - season - GOAL_HORIZON,
                    "warmup_steps": season,
                    "mean": float(series.mean()),
                    "wall_s": rep.wall_s,
                    **scored,
                }
            )
    return {
        "benchmark": "forecast",
        "machine": machine_info(),
        "config": {
            "traces": traces,
            "steps_s": steps,
            "max_steps": max_steps,
            "horizons": list(HORIZONS),
            "max_horizon": MAX_HORIZON,
            "goal": {"horizon": GOAL_HORIZON, "gain_vs_naive": GOAL_GAIN},
            "seed": args.seed,
            "data_dir": str(args.data_dir),
        },
        "runs": runs,
        "goal_met_all": all(r["goal_met"] for r in runs),
    }


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
