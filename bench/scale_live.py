"""``python -m bench scale --live``: the scaler driving the real proxy on loopback, on a compressed trace.

A day of the NASA 1995 trace (its third, from the night's low through the afternoon peak and back) is
replayed in ``--steps`` steps of ``--minutes-per-step`` trace minutes, one step every ``--step-s``
seconds (by default a day in 72 s):

- the proxy runs in this process with a ``frames`` listener and a ``scale:`` section whose provisioner
  starts demo game backends as local processes (``python -m proxy demo-backend``); the pool starts with
  one configured backend, also a process;
- ``--clients`` sessions send numbered ``incr`` frames, each step's frames being the trace's minute
  scaled so that the peak minute is ``--peak-rate`` frames a second; every reply is checked (exactly one
  per frame, in order, the session's counter never skipping);
- the scaler gets, every step, the learner's per-minute forecast made after the previous step
  (``model.learn.Learner`` replayed over the trace, cached as ``python -m bench scale`` caches it)
  summed into steps and scaled the same way (12 minutes ahead: two 5-minute steps); its lead time is
  measured on the real process starts; time settings (cooldowns, stabilisation, initial lead time) are
  compressed by the same factor as the trace; ``capacity`` is the peak step over ``--servers-at-peak``.

Reported: per step the load, the forecast's upper band, servers ready / provisioning / draining and the
scaler's mode; under-provisioned steps (load above the capacity of the servers ready when the step
began); frames sent, answered and lost; migrations (committed, deferred, rolled back) and their pauses;
servers started and stopped.  Writes ``bench/results/scale-live-<stamp>.json`` and ``scale-live-latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pathlib
import sys
import time
from typing import Any

import msgpack
import numpy as np

from bench._common import BenchError, machine_info, markdown_table, write_results
from bench.forecast import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR, aggregate, extract, per_second

STEP_S = 60  # the trace's step (a minute)
WINDOW = 4  # frames in flight per session


def pick_window(series: np.ndarray, steps: int, day: int = 2) -> int:
    """Start of a ``steps``-minute window centred on the peak of ``day``'s 30-minute mean load (the day
    itself when ``steps`` is a day)."""
    per_day = 86400 // STEP_S
    lo, hi = day * per_day, min(len(series), (day + 1) * per_day)
    if hi - lo < steps:
        raise BenchError(f"the trace has fewer than {steps} minutes on day {day + 1}")
    smooth = np.convolve(series[lo:hi].astype(float), np.ones(30) / 30, mode="same")
    peak = lo + int(np.argmax(smooth))
    return max(lo, min(hi - steps, peak - steps // 2))


def config_text(s1: str, args: argparse.Namespace, capacity: float) -> str:
    f = args.step_s / (STEP_S * args.minutes_per_step)  # the trace's compression
    tick = min(0.05, args.step_s / 4)
    return f"""\
global: {{tick_s: {tick}, log_level: warning}}
listeners:
  - {{name: play, bind: '127.0.0.1:0', mode: frames, pool: game}}
pools:
  - name: game
    requires: [game]
    health_check: {{enabled: false}}
    servers: [{{name: s1, address: '{s1}'}}]
scale:
  pool: game
  step_s: {args.step_s}
  capacity: {capacity}
  target_utilization: {args.target_utilization}
  min_servers: 1
  max_servers: {args.max_servers}
  initial_lead_time_s: {120 * f}
  scale_out_cooldown_s: {60 * f}
  scale_in_cooldown_s: {300 * f}
  scale_in_stabilization_s: {600 * f}
  drain_timeout_s: 30
  migrations_per_s: 500
  provisioner:
    kind: process
    command: ['{{python}}', '-m', 'proxy', 'demo-backend', '--port', '{{port}}', '--name', '{{name}}',
              '--requires', 'game']
    ready_timeout_s: 30
    stop_timeout_s: 5
"""


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0
        self.errors: list[Any] = []
        self.order_violations = 0
        self.moved_sessions = 0


async def _client(address: tuple[str, int], n: int, quotas: list[int], starts: list[asyncio.Event], tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(*address)

    def send(msg: dict[str, Any]) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        writer.write(len(body).to_bytes(4, "big") + body)

    async def recv() -> Any:
        async with asyncio.timeout(30):
            header = await reader.readexactly(4)
            return msgpack.unpackb(await reader.readexactly(int.from_bytes(header, "big")), raw=False)

    send({"op": "hello", "sid": f"live-{n}"})
    await recv()
    seq = value = 0
    expected = 1
    servers: set[str] = set()
    for t, quota in enumerate(quotas):
        await starts[t].wait()
        outstanding = sent = 0
        while sent < quota or outstanding:
            while sent < quota and outstanding < WINDOW:
                seq += 1
                sent += 1
                outstanding += 1
                tally.sent += 1
                send({"op": "incr", "key": "n", "seq": seq})
            reply = await recv()
            outstanding -= 1
            if "error" in reply:
                tally.errors.append(reply)
                expected += 1
                continue
            if reply.get("seq") != expected or reply.get("value") != value + 1:
                tally.order_violations += 1
            expected = reply.get("seq", expected) + 1
            value = reply.get("value", value)
            servers.add(reply.get("server"))
            tally.answered += 1
    tally.moved_sessions += len(servers) > 1
    writer.close()


def block_forecast(fc: Any, t: int, mps: int, k: float) -> tuple[list[list[float]], list[bool]]:
    """The per-minute forecast made after minute ``t``, summed into steps of ``mps`` minutes, times ``k``."""
    horizons = fc.lo.shape[1] // mps
    points, beats = [], []
    for b in range(horizons):
        block = slice(b * mps, (b + 1) * mps)
        points.append([0.0, *(float(arr[t, block].sum() * k) for arr in (fc.lo, fc.mid, fc.hi))])
        beats.append(bool(fc.beats[t, block].all()))
    return points, beats


async def run_live(window: np.ndarray, fc: Any, first: int, args: argparse.Namespace) -> dict[str, Any]:
    from proxy.conf import load_config_text
    from proxy.logs import Logger
    from proxy.runtime import Runtime
    from proxy.scale.provisioners import ProcessProvisioner

    mps = args.minutes_per_step
    steps = len(window) // mps
    blocks = window[: steps * mps].reshape(steps, mps).sum(axis=1)
    k = args.peak_rate * args.step_s / float(blocks.max())  # trace requests -> frames
    frames = [round(v * k) for v in blocks.tolist()]
    capacity = max(frames) / args.servers_at_peak
    base = ProcessProvisioner(
        ["{python}", "-m", "proxy", "demo-backend", "--port", "{port}", "--name", "{name}", "--requires", "game"]
    )
    s1 = await base.start("s1")
    runtime = Runtime(load_config_text(config_text(s1, args, capacity), "<bench>"), log=Logger("warning", io.StringIO()))
    task = asyncio.create_task(runtime.run(install_signals=False))
    try:
        await runtime.wait_ready()
        scaling = runtime.scaling
        current = {"t": 0}

        def forecast() -> dict[str, Any] | None:
            t = first + current["t"] * mps - 1  # made after the last minute of the previous step
            if current["t"] == 0:
                return None
            points, beats = block_forecast(fc, t, mps, k)
            return {
                "points": points,
                "step_s": args.step_s,
                "beats_naive": beats[-1],
                "beats_naive_at": beats,
                "model": fc.model[t],
            }

        scaling.forecast_source = forecast
        tally = Tally()
        starts = [asyncio.Event() for _ in range(steps)]
        quotas = [[0] * steps for _ in range(args.clients)]
        for t, total in enumerate(frames):
            for i in range(total):
                quotas[(i + t) % args.clients][t] += 1
        address = runtime.listener_address("play")
        clients = [asyncio.create_task(_client(address, n, quotas[n], starts, tally)) for n in range(args.clients)]
        started_names: set[str] = set()
        timeline = []
        t0 = time.monotonic()
        for t in range(steps):
            current["t"] = t
            phases = {name: p.value for name, p in scaling.scaler.phases.items()}
            started_names.update(n for n in phases if n.startswith("scale-"))
            ready = sum(1 for p in phases.values() if p == "ready")
            fc_now = forecast()
            timeline.append(
                {
                    "step": t,
                    "frames": frames[t],
                    "forecast_hi": None if fc_now is None else fc_now["points"][0][3],
                    "ready": ready,
                    "provisioning": sum(1 for p in phases.values() if p == "provisioning"),
                    "draining": sum(1 for p in phases.values() if p == "draining"),
                    "under_provisioned": frames[t] > ready * capacity,
                    "mode": scaling.scaler.core.status()["mode"],
                }
            )
            starts[t].set()
            await asyncio.sleep(max(0.0, t0 + (t + 1) * args.step_s - time.monotonic()))  # the trace's clock
        async with asyncio.timeout(120):
            await asyncio.gather(*clients)
        wall = time.monotonic() - t0
        status = scaling.status()
        migrations = runtime.migrations.as_dict()
        stopped = sorted(started_names - set(scaling.provisioner.running()))
    finally:
        runtime.request_stop(hard=True)
        async with asyncio.timeout(60):
            await task
        await base.aclose()
    lost = tally.sent - tally.answered - len(tally.errors)
    return {
        "first_minute": first,
        "minutes_per_step": mps,
        "steps": steps,
        "step_s": args.step_s,
        "frames_per_trace_request": k,
        "capacity": capacity,
        "wall_s": wall,
        "frames_sent": tally.sent,
        "frames_answered": tally.answered,
        "frames_lost": lost,
        "error_frames": len(tally.errors),
        "order_violations": tally.order_violations,
        "sessions_moved": tally.moved_sessions,
        "under_provisioned_steps": sum(1 for row in timeline if row["under_provisioned"]),
        "peak_ready": max(row["ready"] for row in timeline),
        "servers_started": sorted(started_names),
        "servers_stopped": stopped,
        "lead_time_s": status["lead_time_s"],
        "migrations": {k: migrations[k] for k in ("outcomes", "pause_avg_s", "pause_max_s", "resent_requests_total", "unknown_outcomes_total")},
        "scaler_migrations": status["migrations"],
        "decisions": status["decisions"],
        "timeline": timeline,
    }


def markdown(result: dict[str, Any]) -> str:
    r = result["run"]
    m = r["migrations"]
    lines = [
        "# bench scale --live",
        "",
        f"NASA 1995, minutes {r['first_minute']:,}-{r['first_minute'] + r['steps'] * r['minutes_per_step'] - 1:,} "
        f"(the third day), {r['minutes_per_step']} minutes per step of {r['step_s']:g} s; "
        f"{result['args']['clients']} sessions, peak {result['args']['peak_rate']:,} "
        f"frames/s; capacity {r['capacity']:.0f} frames per step per server at target utilisation "
        f"{result['args']['target_utilization']:g}; {r['wall_s']:.1f} s on {result['machine'].get('cpu', 'this machine')}.",
        "",
        markdown_table(
            ["what", "value"],
            [
                ["frames sent / answered / lost", f"{r['frames_sent']:,} / {r['frames_answered']:,} / {r['frames_lost']:,}"],
                ["error frames, order violations", f"{r['error_frames']} , {r['order_violations']}"],
                ["servers started / stopped", f"{len(r['servers_started'])} / {len(r['servers_stopped'])}"],
                ["peak ready servers", str(r["peak_ready"])],
                ["under-provisioned steps", f"{r['under_provisioned_steps']} of {r['steps']}"],
                ["measured lead time", f"{r['lead_time_s']:.2f} s"],
                ["sessions that changed server", str(r["sessions_moved"])],
                ["migrations committed / deferred / rolled back", f"{m['outcomes'].get('committed', 0)} / {m['outcomes'].get('deferred', 0)} / {m['outcomes'].get('rolled_back', 0)}"],
                ["migration pause avg / max", f"{m['pause_avg_s'] * 1000:.1f} ms / {m['pause_max_s'] * 1000:.1f} ms"],
            ],
        ),
        "",
        "Timeline (every tenth step):",
        "",
        markdown_table(
            ["step", "frames", "forecast hi", "ready", "provisioning", "draining", "mode"],
            [
                [
                    str(row["step"]),
                    str(row["frames"]),
                    "-" if row["forecast_hi"] is None else f"{row['forecast_hi']:.0f}",
                    str(row["ready"]),
                    str(row["provisioning"]),
                    str(row["draining"]),
                    row["mode"],
                ]
                for row in r["timeline"][::10]
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench scale --live",
        description="The scaler driving the proxy on loopback: a compressed NASA trace, process provisioning.",
    )
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_DATA_DIR, help="default ../shared/data")
    parser.add_argument("--cache-dir", type=pathlib.Path, default=DEFAULT_CACHE_DIR, help="extracted traces")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None, help="default bench/results")
    parser.add_argument("--steps", type=int, default=288, help="steps replayed")
    parser.add_argument("--minutes-per-step", type=int, default=5, help="trace minutes per step (1-6)")
    parser.add_argument("--step-s", type=float, default=0.25, help="seconds per step")
    parser.add_argument("--clients", type=int, default=32, help="sessions")
    parser.add_argument("--peak-rate", type=int, default=1200, help="frames per second at the peak minute")
    parser.add_argument("--servers-at-peak", type=float, default=4.0, help="capacity = peak step / this")
    parser.add_argument("--target-utilization", type=float, default=0.7)
    parser.add_argument("--max-servers", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1 <= args.minutes_per_step <= 6:
        print("bench scale --live: --minutes-per-step must be 1 to 6 (the forecast is 12 minutes)", file=sys.stderr)
        return 2
    if args.steps < 20 or args.step_s <= 0 or args.clients < 1 or args.peak_rate < 1 or args.servers_at_peak <= 0:
        print("bench scale --live: need --steps >= 20 and positive --step-s, --clients, --peak-rate", file=sys.stderr)
        return 2
    from bench.scale import SEASON, _learner_digest, learn

    try:
        # Three days: the learner's forecast at a minute depends on the past only, so the replay stops
        # at the end of the day played (a few seconds, then cached).
        series = aggregate(per_second(extract(args.data_dir, args.cache_dir, "nasa")), STEP_S)[: 3 * SEASON]
        cache = args.cache_dir.parent / "scale" / f"nasa-{len(series)}-s{args.seed}-{_learner_digest()}.npz"
        print(f"bench scale --live: nasa, {len(series):,} minutes: learner ...", file=sys.stderr, flush=True)
        fc = learn(series, cache, args.seed)
        first = pick_window(series, args.steps * args.minutes_per_step)
        if first < SEASON:
            raise BenchError("the window must start after the learner's first season")
        minutes = args.steps * args.minutes_per_step
        print(f"bench scale --live: replaying minutes {first:,}+{minutes} ...", file=sys.stderr, flush=True)
        run = asyncio.run(run_live(series[first : first + minutes], fc, first, args))
    except BenchError as exc:
        print(f"bench scale --live: {exc}", file=sys.stderr)
        return 1
    result = {"machine": machine_info(), "args": {k: v for k, v in vars(args).items() if not isinstance(v, pathlib.Path)}, "run": run}
    md = markdown(result)
    out = {"out_dir": args.results_dir} if args.results_dir else {}
    json_path, md_path = write_results("scale-live", result, md, **out)
    print(md)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0 if run["frames_lost"] == 0 and run["order_violations"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
