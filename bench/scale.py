"""``python -m bench scale``: the predictive scaler against HPA-style reactive rules, on real traces.

1. Load the NASA 1995 and Twitter 2021 per-second traces with ``bench.forecast``'s loader and sum them
   into one-minute steps.
2. Replay each series once through ``model.learn.Learner`` (the class the learner process runs) and
   keep, for every step, the 12-step forecast with its band made right after learning that step
   (forecasts do not depend on the fleet, so one replay serves every policy and setting; it is cached
   under the cache directory, keyed by the learner's source).
3. Simulate a fleet (``proxy.scale.sim``) with a per-server capacity of a tenth of the trace's 99th
   percentile minute and a provisioning delay of 1 and 5 minutes, under:

   - ``predictive``: ``proxy.scale.core.ScalingCore``, the proxy's own decision core, on the learner's
     forecast (upper band over the measured lead time; reactive fallback while it does not beat naive);
   - ``reactive``: Kubernetes HPA's rule (``desired = ceil(current * load / target)``, 10% tolerance,
     300 s scale-down stabilisation);
   - ``core + perfect forecast``: the same core fed the future itself (what better forecasts could buy);
   - ``perfect``: perfect foresight, ``ceil(load / capacity)`` servers every minute (the bound);

   across a sweep of headroom settings (target utilisation = 1 - headroom) for both scalers.
4. Score after a one-day warm-up (the learner needs a season): under-provisioned minutes, unserved
   load, server-minutes, scaling actions and reversals.

Goal (NASA trace): for the reactive setting with the fewest under-provisioned minutes, a predictive
setting with no more server-minutes has >= 5x fewer under-provisioned minutes and fewer actions.

Writes ``bench/results/scale-<stamp>.json`` and ``scale-latest.md``.  The default run takes about
2.5 minutes on one core from a cold cache (half of it the learner replay, cached afterwards) and about
70 s after; ``--quick`` replays the first 3,000 minutes of each trace with the 5-minute delay only
(seconds).  ``--live`` runs the scaler inside the real proxy on a compressed stretch of the NASA trace
instead (``bench/scale_live.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import pathlib
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bench._common import ROOT, BenchError, fmt_number, machine_info, markdown_table, write_results
from bench.forecast import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR, TRACES, aggregate, extract, per_second
from proxy.scale.core import ForecastView, ScaleSettings
from proxy.scale.sim import CorePolicy, FleetSpec, PerfectPolicy, ReactivePolicy, SimResult, simulate

STEP_S = 60
SEASON = 86400 // STEP_S
MAX_HORIZON = 12
DELAYS_S = (60, 300)
HEADROOMS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
QUICK_STEPS = 3000
QUICK_WARM = 1440
GOAL_TRACE = "nasa"
GOAL_RATIO = 5.0
MAX_SERVERS = 200


@dataclass
class Forecasts:
    lo: np.ndarray  # (steps, MAX_HORIZON)
    mid: np.ndarray
    hi: np.ndarray
    beats: np.ndarray  # (steps, MAX_HORIZON) bool
    model: list[str]
    wall_s: float
    cached: bool

    def view(self, t: int) -> ForecastView:
        base = (t + 1) * STEP_S
        lo, mid, hi = self.lo[t].tolist(), self.mid[t].tolist(), self.hi[t].tolist()
        return ForecastView(
            points=tuple((base + h * STEP_S, lo[h], mid[h], hi[h]) for h in range(MAX_HORIZON)),
            beats_naive=bool(self.beats[t, -1]),
            step_s=float(STEP_S),
            model=self.model[t],
            beats_naive_at=tuple(self.beats[t].tolist()),
        )


def _learner_digest() -> str:
    h = hashlib.sha256()
    for path in sorted((ROOT / "model" / "learn").rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def learn(series: np.ndarray, cache: pathlib.Path, seed: int) -> Forecasts:
    """The learner's forecast after every step (cached: a full NASA replay takes about a minute)."""
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return Forecasts(
            data["lo"], data["mid"], data["hi"], data["beats"], data["model"].tolist(), 0.0, True
        )
    from model.learn import Learner

    learner = Learner(step_s=float(STEP_S), season_steps=SEASON, seed=seed, max_horizon=MAX_HORIZON)
    n = len(series)
    lo, mid, hi = (np.zeros((n, MAX_HORIZON)) for _ in range(3))
    beats = np.zeros((n, MAX_HORIZON), dtype=bool)
    models = []
    started = time.perf_counter()
    for t, y in enumerate(series.tolist()):
        learner.observe_aggregate(t * STEP_S, y)
        fc = learner.forecast(MAX_HORIZON)
        band = np.asarray(fc.points)
        lo[t], mid[t], hi[t] = band[:, 1], band[:, 2], band[:, 3]
        beats[t] = fc.beats_naive_at
        models.append(fc.model_name)
    wall = time.perf_counter() - started
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, lo=lo, mid=mid, hi=hi, beats=beats, model=np.array(models))
    return Forecasts(lo, mid, hi, beats, models, wall, False)


def oracle(series: np.ndarray) -> Any:
    """A perfect forecast: the future itself, with a zero-width band, always beating naive."""
    values = series.tolist()
    n = len(values)
    flags = (True,) * MAX_HORIZON

    def at(t: int) -> ForecastView:
        base = (t + 1) * STEP_S
        pts = tuple(
            (base + h * STEP_S, v, v, v)
            for h, v in enumerate(
                values[t + 1 + k] if t + 1 + k < n else values[-1] for k in range(MAX_HORIZON)
            )
        )
        return ForecastView(pts, True, float(STEP_S), "perfect", flags)

    return at


def settings_for(capacity: float, headroom: float, base: ScaleSettings) -> ScaleSettings:
    return replace(base, capacity=capacity, target_utilization=1.0 - headroom)


def run_trace(
    trace: str,
    series: np.ndarray,
    fc: Forecasts,
    delays: tuple[int, ...],
    headrooms: tuple[float, ...],
    warm: int,
    base: ScaleSettings,
) -> dict[str, Any]:
    capacity = float(math.ceil(np.percentile(series, 99) / 10))
    out: dict[str, Any] = {
        "trace": trace,
        "steps": len(series),
        "scored_steps": len(series) - warm,
        "capacity_per_server": capacity,
        "mean_load": float(series.mean()),
        "learner_wall_s": fc.wall_s,
        "learner_cached": fc.cached,
        "beats_naive_share": float(fc.beats[warm:, :].mean()) if len(series) > warm else math.nan,
        "delays": [],
    }
    loads = series.tolist()
    perfect_fc = oracle(series)
    for delay in delays:
        spec = FleetSpec(capacity=capacity, provision_delay_s=float(delay), step_s=float(STEP_S))
        started = time.perf_counter()
        rows: list[dict[str, Any]] = []

        def record(
            rows: list[dict[str, Any]], kind: str, headroom: float | None, res: SimResult, policy: Any = None
        ) -> None:
            row = {"kind": kind, "headroom": headroom, **res.to_json()}
            if isinstance(policy, CorePolicy):
                core = policy.core
                row["reactive_share"] = core.reactive_steps / max(1, core.steps)
            rows.append(row)

        for h in headrooms:
            st = replace(settings_for(capacity, h, base), max_servers=MAX_SERVERS)
            pol = CorePolicy(st, fc.view, name="predictive")
            record(rows, "predictive", h, simulate(loads, spec, pol, score_from=warm), pol)
            rpol = ReactivePolicy(capacity, 1.0 - h, max_servers=MAX_SERVERS)
            record(rows, "reactive", h, simulate(loads, spec, rpol, score_from=warm))
        st = replace(settings_for(capacity, headrooms[0], base), max_servers=MAX_SERVERS)
        opol = CorePolicy(st, perfect_fc, name="core+perfect forecast")
        record(
            rows, "core+perfect forecast", headrooms[0], simulate(loads, spec, opol, score_from=warm), opol
        )
        record(rows, "perfect", None, simulate(loads, spec, PerfectPolicy(loads, spec), score_from=warm))
        out["delays"].append(
            {
                "delay_s": delay,
                "rows": rows,
                "goal": goal(rows),
                "frontier": frontier(rows),
                "wall_s": time.perf_counter() - started,
            }
        )
    return out


def frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every reactive setting, the predictive setting with the fewest under-provisioned minutes among
    those using no more server-minutes (None when every predictive setting costs more)."""
    predictive = [r for r in rows if r["kind"] == "predictive"]
    out = []
    for r in (r for r in rows if r["kind"] == "reactive"):
        fits = [p for p in predictive if p["server_minutes"] <= r["server_minutes"]]
        pick = (
            min(fits, key=lambda p: (p["under_provisioned_minutes"], p["server_minutes"])) if fits else None
        )
        ratio = None
        if pick is not None:
            under = pick["under_provisioned_minutes"]
            ratio = r["under_provisioned_minutes"] / under if under > 0 else math.inf
        at_equal = interpolate(predictive, r["server_minutes"])
        out.append(
            {
                "reactive_headroom": r["headroom"],
                "predictive_headroom": None if pick is None else pick["headroom"],
                "ratio": ratio,
                "fewer_actions": None if pick is None else bool(pick["actions"] < r["actions"]),
                "predictive_under_min_at_equal_server_min": at_equal,
                "ratio_at_equal_server_min": None
                if at_equal is None
                else (r["under_provisioned_minutes"] / at_equal if at_equal > 0 else math.inf),
            }
        )
    return out


def interpolate(predictive: list[dict[str, Any]], server_minutes: float) -> float | None:
    """The predictive under-provisioned minutes at exactly ``server_minutes``, interpolated log-linearly
    between the two sweep points around it (None outside the sweep): a check that a ratio does not
    hang on where the headroom grid happens to fall."""
    pts = sorted((p["server_minutes"], p["under_provisioned_minutes"]) for p in predictive)
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= server_minutes <= x1 and x1 > x0:
            f = (server_minutes - x0) / (x1 - x0)
            if y0 > 0 and y1 > 0:
                return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))
            return y0 + f * (y1 - y0)
    return None


def goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best reactive (fewest under-provisioned minutes, then fewest server-minutes) against the best
    predictive setting that uses no more server-minutes."""
    reactive = [r for r in rows if r["kind"] == "reactive"]
    predictive = [r for r in rows if r["kind"] == "predictive"]
    best = min(reactive, key=lambda r: (r["under_provisioned_minutes"], r["server_minutes"]))
    fits = [p for p in predictive if p["server_minutes"] <= best["server_minutes"]]
    if not fits:
        return {
            "reactive_headroom": best["headroom"],
            "predictive_headroom": None,
            "met": False,
            "ratio": None,
            "why": "no predictive setting within the reactive server-minutes",
        }
    pick = min(fits, key=lambda r: (r["under_provisioned_minutes"], r["server_minutes"]))
    ratio = (
        best["under_provisioned_minutes"] / pick["under_provisioned_minutes"]
        if pick["under_provisioned_minutes"] > 0
        else math.inf
    )
    met = ratio >= GOAL_RATIO and pick["actions"] < best["actions"]
    return {
        "reactive_headroom": best["headroom"],
        "predictive_headroom": pick["headroom"],
        "reactive_under_min": best["under_provisioned_minutes"],
        "predictive_under_min": pick["under_provisioned_minutes"],
        "reactive_server_min": best["server_minutes"],
        "predictive_server_min": pick["server_minutes"],
        "reactive_actions": best["actions"],
        "predictive_actions": pick["actions"],
        "ratio": ratio,
        "met": bool(met),
    }


# -- report ---------------------------------------------------------------------------------------


def _count(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _ratio(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "inf" if math.isinf(x) else f"{x:.1f}x"


def markdown(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        "# bench scale",
        "",
        f"{info['date']} · {info['cpu']} · Python {info['python']} · commit {info['commit'][:12]}"
        f"{' (dirty)' if info.get('dirty') else ''} · whole run {result['wall_s']:.0f} s",
        "",
        "One-minute steps; capacity per server = p99 minute / 10; scored after a "
        f"{result['warm_steps']}-step warm-up.  Headroom = 1 - target utilisation.  Goal ({GOAL_TRACE}):"
        f" >= {GOAL_RATIO:g}x fewer under-provisioned minutes than the best reactive setting at no more"
        " server-minutes, with fewer actions.",
        "",
    ]
    summary = []
    for tr in result["runs"]:
        for d in tr["delays"]:
            g = d["goal"]
            summary.append(
                [
                    tr["trace"],
                    f"{d['delay_s'] // 60} min",
                    _count(g["reactive_headroom"], "{:.1f}"),
                    _count(g.get("reactive_under_min")),
                    fmt_number(g.get("reactive_server_min")),
                    f"{g.get('reactive_actions', 'n/a')}",
                    _count(g["predictive_headroom"], "{:.1f}"),
                    _count(g.get("predictive_under_min")),
                    fmt_number(g.get("predictive_server_min")),
                    f"{g.get('predictive_actions', 'n/a')}",
                    _ratio(g.get("ratio")),
                    "yes" if g["met"] else "**no**",
                ]
            )
    lines.append(
        markdown_table(
            [
                "trace",
                "delay",
                "reactive headroom",
                "under-prov min",
                "server-min",
                "actions",
                "predictive headroom",
                "under-prov min",
                "server-min",
                "actions",
                "fewer under-prov",
                "goal met",
            ],
            summary,
        )
    )
    for tr in result["runs"]:
        for d in tr["delays"]:
            lines += [
                "",
                f"## {tr['trace']}, provisioning delay {d['delay_s'] // 60} min"
                f" ({tr['scored_steps']:,} scored minutes, capacity {fmt_number(tr['capacity_per_server'])}"
                f" per server per minute, mean load {fmt_number(tr['mean_load'])})",
                "",
            ]
            rows = []
            for r in d["rows"]:
                rows.append(
                    [
                        r["kind"],
                        "" if r["headroom"] is None else f"{r['headroom']:.1f}",
                        f"{r['under_provisioned_minutes']:,.0f}",
                        f"{r['unserved_share']:.3%}",
                        f"{r['server_minutes']:,.0f}",
                        f"{r['actions']:,}",
                        f"{r['reversals']:,}",
                        f"{r['peak_servers']}",
                        "" if r.get("reactive_share") is None else f"{r['reactive_share']:.0%}",
                    ]
                )
            lines.append(
                markdown_table(
                    [
                        "policy",
                        "headroom",
                        "under-prov min",
                        "unserved",
                        "server-min",
                        "actions",
                        "reversals",
                        "peak servers",
                        "reactive fallback",
                    ],
                    rows,
                )
            )
            rows_by_h = {r["headroom"]: r for r in d["rows"] if r["kind"] == "reactive"}
            front = []
            for f in d["frontier"]:
                r = rows_by_h[f["reactive_headroom"]]
                front.append(
                    [
                        f"{f['reactive_headroom']:.1f}",
                        f"{r['under_provisioned_minutes']:,.0f}",
                        f"{r['server_minutes']:,.0f}",
                        _count(f["predictive_headroom"], "{:.1f}"),
                        _ratio(f["ratio"]),
                        "n/a" if f["fewer_actions"] is None else ("yes" if f["fewer_actions"] else "no"),
                        _count(f["predictive_under_min_at_equal_server_min"]),
                        _ratio(f["ratio_at_equal_server_min"]),
                    ]
                )
            lines += [
                "",
                "Each reactive setting against the predictive sweep at no more server-minutes (best sweep"
                " point, and interpolated between sweep points at exactly the same server-minutes):",
                "",
                markdown_table(
                    [
                        "reactive headroom",
                        "under-prov min",
                        "server-min",
                        "predictive headroom within budget",
                        "fewer under-prov",
                        "fewer actions",
                        "predictive under-prov at equal server-min",
                        "fewer under-prov at equal server-min",
                    ],
                    front,
                ),
            ]
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if "--live" in argv:
        from bench.scale_live import main as live_main

        return live_main([a for a in argv if a != "--live"])
    parser = argparse.ArgumentParser(
        prog="python -m bench scale",
        description="Predictive scaler vs HPA-style reactive rules on the NASA 1995 and Twitter 2021 traces.",
    )
    parser.add_argument(
        "--data-dir", type=pathlib.Path, default=DEFAULT_DATA_DIR, help="default ../shared/data"
    )
    parser.add_argument("--cache-dir", type=pathlib.Path, default=DEFAULT_CACHE_DIR, help="extracted traces")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None, help="default bench/results")
    parser.add_argument("--traces", default="nasa,twitter", help="comma-separated: nasa,twitter")
    parser.add_argument("--delays-s", default=",".join(str(d) for d in DELAYS_S), help="provisioning delays")
    parser.add_argument("--headrooms", default=",".join(str(h) for h in HEADROOMS), help="headroom sweep")
    parser.add_argument("--max-steps", type=int, default=None, help="replay at most this many minutes")
    parser.add_argument("--warm-steps", type=int, default=None, help=f"unscored warm-up (default {SEASON})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} minutes, 5-minute delay only")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    traces = [t for t in args.traces.split(",") if t]
    unknown = [t for t in traces if t not in TRACES]
    if unknown or not traces:
        print(f"bench scale: unknown traces {unknown} (known: {', '.join(TRACES)})", file=sys.stderr)
        return 2
    try:
        delays = tuple(int(d) for d in args.delays_s.split(",") if d)
        headrooms = tuple(float(h) for h in args.headrooms.split(",") if h)
    except ValueError:
        print("bench scale: --delays-s and --headrooms take comma-separated numbers", file=sys.stderr)
        return 2
    if args.quick:
        delays = (300,) if args.delays_s == ",".join(str(d) for d in DELAYS_S) else delays
    if not delays or any(d <= 0 for d in delays) or not headrooms or any(not 0 <= h < 1 for h in headrooms):
        print("bench scale: delays must be > 0 and headrooms in [0, 1)", file=sys.stderr)
        return 2
    max_steps = QUICK_STEPS if args.quick and args.max_steps is None else args.max_steps
    warm = args.warm_steps if args.warm_steps is not None else (QUICK_WARM if args.quick else SEASON)
    started = time.perf_counter()
    runs = []
    try:
        for trace in traces:
            series = aggregate(per_second(extract(args.data_dir, args.cache_dir, trace)), STEP_S)
            if max_steps is not None:
                series = series[:max_steps]
            if len(series) <= warm + MAX_HORIZON:
                raise BenchError(
                    f"{trace}: {len(series)} minutes is not more than the warm-up; raise --max-steps"
                )
            cache = (
                args.cache_dir.parent
                / "scale"
                / f"{trace}-{len(series)}-s{args.seed}-{_learner_digest()}.npz"
            )
            print(f"bench scale: {trace}, {len(series):,} minutes: learner ...", file=sys.stderr, flush=True)
            fc = learn(series, cache, args.seed)
            print(f"bench scale: {trace}: simulating ...", file=sys.stderr, flush=True)
            runs.append(run_trace(trace, series, fc, delays, headrooms, warm, ScaleSettings()))
    except BenchError as exc:
        print(f"bench scale: {exc}", file=sys.stderr)
        return 1
    result = {
        "machine": machine_info(),
        "settings": ScaleSettings().__class__.__name__,
        "base_settings": {k: getattr(ScaleSettings(), k) for k in ScaleSettings.__dataclass_fields__},
        "warm_steps": warm,
        "quick": bool(args.quick),
        "runs": runs,
        "wall_s": time.perf_counter() - started,
    }
    md = markdown(result)
    out = {"out_dir": args.results_dir} if args.results_dir else {}
    json_path, md_path = write_results("scale", result, md, **out)
    print(md)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0
