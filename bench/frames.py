"""``python -m bench frames``: frames-mode throughput beside HAProxy ``mode tcp``, in one run.

The same C load generator (``bench/loadgen.c``, mode ``framed``) sends 64-byte length-prefixed
frames, one in flight per connection, at 16 and 256 connections:

- **direct** to ``bench/echo.c`` (the frames come back as they went);
- **haproxy** (``mode tcp``, one thread) relaying bytes to ``bench/echo.c``;
- **ferryman frames**: a ``frames`` listener that decodes every frame, numbers it, wraps it in an
  envelope ``req`` to ``bench/envecho.c`` (a C server of the envelope dialect that answers every
  ``req`` with a ``res`` carrying the same body), unwraps the ``res`` and frames the body back;
- **ferryman frames (Python)**: the same with the compiled steady-state path switched off
  (``FERRYMAN_NO_SPEEDUPS=1``), which is what an install without a C compiler runs;
- **ferryman tcp**, for reference: the same proxy relaying bytes;
- **pyrelay**, the ceiling for anything whose protocol callbacks are Python: ``bench/pyrelay.py``, two
  asyncio Protocols spliced on uvloop and nothing else, relaying bytes to the echo.

HAProxy relays bytes without looking at them; ferryman in frames mode does per-frame work a byte
relay does not (decode, sequence, envelope both ways, session bookkeeping), so this compares what an
operator gets for the session-aware features against the plain L4 relay.  Proxies run pinned to CPU 1,
everything else to CPU 0 (as in ``bench tcp``); figures are medians over rounds with the target order
rotating.  The proxy's CPU time per message is reported too.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bench._common import (
    ROOT,
    BenchError,
    CpuPlan,
    Processes,
    build_c,
    fmt_number,
    free_ports,
    machine_info,
    markdown_table,
    median,
    start_haproxy,
    wait_http_ok,
    wait_port,
    write_results,
)
from bench.tcp import READY_DEADLINE_S, Measurement, Target, Workload, _work_dir, measure_loadgen

TARGETS = ("direct", "haproxy", "ferryman-frames", "ferryman-frames-py", "ferryman-tcp", "pyrelay")
WORKLOADS = tuple(
    Workload(f"framed-{n}", f"64 B frames, {n} conns", "loadgen", "framed", "echo", n, 64, "msgs/s", "msg")
    for n in (16, 256)
)


def _ferryman(procs: Processes, name: str, mode: str, backend: int, plan: CpuPlan, *, compiled: bool = True) -> Target:
    listen, admin = free_ports(2)
    cfg = procs.log_dir / f"{name}.yaml"
    cfg.write_text(
        "global: {access_log: null, log_level: warning}\n"
        f"listeners:\n  - {{name: play, bind: '127.0.0.1:{listen}', mode: {mode}, pool: game}}\n"
        "pools:\n  - name: game\n    health_check: {enabled: true, interval_s: 2.0}\n"
        f"    servers:\n      - {{name: b1, address: '127.0.0.1:{backend}'}}\n"
        f"admin: {{bind: '127.0.0.1:{admin}', token: bench}}\n"
    )
    env = {**os.environ, "FERRYMAN_NO_SPEEDUPS": "0" if compiled else "1"}
    proc = procs.start(name, [sys.executable, "-m", "proxy", "run", "-c", str(cfg)], cpu=plan.proxy_cpu, cwd=ROOT, env=env)
    try:
        wait_http_ok(f"http://127.0.0.1:{admin}/readyz", deadline_s=READY_DEADLINE_S, proc=proc)
        wait_port(listen, deadline_s=5.0, proc=proc)
    except BenchError as exc:
        procs.stop(proc)
        raise BenchError(f"{name} did not come up: {exc}\n{procs.log_tail(proc)}") from None
    return Target(name, {"echo": listen}, proc.pid, proc)


def _pyrelay(procs: Processes, backend: int, plan: CpuPlan) -> Target:
    (listen,) = free_ports(1)
    cmd = [sys.executable, "-m", "bench.pyrelay", f"{listen}:{backend}"]
    proc = procs.start("pyrelay", cmd, cpu=plan.proxy_cpu, ready_line=b"ready", cwd=ROOT)
    return Target("pyrelay", {"echo": listen}, proc.pid, proc)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = CpuPlan.detect()
    loadgen, echo, envecho = build_c("loadgen"), build_c("echo"), build_c("envecho")
    with _work_dir(None) as work:
        procs = Processes(work)
        try:
            started = procs.start("echo", [str(echo), "echo", "0", "64"], cpu=plan.load_cpu, ready_line=b"ready ")
            echo_port = int(procs.ready[started.pid].split()[1])
            started = procs.start("envecho", [str(envecho), "0"], cpu=plan.load_cpu, ready_line=b"ready ")
            env_port = int(procs.ready[started.pid].split()[1])
            (hp,) = free_ports(1)
            haproxy = start_haproxy(procs, {hp: echo_port}, cpu=plan.proxy_cpu)
            targets = {
                "direct": Target("direct", {"echo": echo_port}, None),
                "haproxy": Target("haproxy", {"echo": hp}, haproxy.pid, haproxy),
                "ferryman-frames": _ferryman(procs, "ferryman-frames", "frames", env_port, plan),
                "ferryman-frames-py": _ferryman(procs, "ferryman-frames-py", "frames", env_port, plan, compiled=False),
                "ferryman-tcp": _ferryman(procs, "ferryman-tcp", "tcp", echo_port, plan),
                "pyrelay": _pyrelay(procs, echo_port, plan),
            }
            raw: dict[str, dict[str, list[dict[str, Any]]]] = {w.name: {t: [] for t in TARGETS} for w in WORKLOADS}
            for r in range(args.rounds):
                for w in WORKLOADS:
                    order = TARGETS[r % len(TARGETS):] + TARGETS[: r % len(TARGETS)]
                    for t in order:
                        m: Measurement = measure_loadgen(
                            loadgen, w, targets[t].ports["echo"], warmup_s=args.warmup_s,
                            duration_s=args.duration_s, proxy_pid=targets[t].pid, cpu=plan.load_cpu,
                        )  # fmt: skip
                        raw[w.name][t].append({"rate": m.rate, "cpu_us_per_msg": m.cpu_us_per_msg})
                        print(f"  round {r + 1} {w.name:11} {t:16} {fmt_number(m.rate)} msgs/s", flush=True)
        finally:
            procs.stop_all()
    return {"pinned": plan.pinned, "raw": raw}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench frames", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="one round of 1 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration_s, args.warmup_s = 1, 1.0, 0.3
    try:
        data = run(args)
    except BenchError as exc:
        print(f"bench frames: {exc}", file=sys.stderr)
        return 1
    rows = []
    summary: dict[str, dict[str, float]] = {}
    for w in WORKLOADS:
        med = {t: median([x["rate"] for x in data["raw"][w.name][t]]) for t in TARGETS}
        cpu = {t: median([x["cpu_us_per_msg"] or 0.0 for x in data["raw"][w.name][t]]) for t in TARGETS}
        summary[w.name] = {
            **{f"{t}_msgs_per_s": med[t] for t in TARGETS},
            "frames_vs_haproxy": med["ferryman-frames"] / med["haproxy"],
            "frames_python_vs_haproxy": med["ferryman-frames-py"] / med["haproxy"],
            "pyrelay_vs_haproxy": med["pyrelay"] / med["haproxy"],
        }
        rows.append([
            w.label, *(fmt_number(med[t]) for t in TARGETS), f"{med['ferryman-frames'] / med['haproxy']:.2f}",
            f"{med['ferryman-frames-py'] / med['haproxy']:.2f}", f"{med['pyrelay'] / med['haproxy']:.2f}",
            f"{cpu['haproxy']:.1f} / {cpu['ferryman-frames']:.1f} / {cpu['ferryman-frames-py']:.1f} / {cpu['ferryman-tcp']:.1f}",
        ])  # fmt: skip
    header = [
        "workload", *TARGETS, "frames / haproxy", "frames (Python) / haproxy", "pyrelay / haproxy",
        "CPU µs/msg haproxy / frames / frames (Python) / tcp",
    ]  # fmt: skip
    table = markdown_table(header, rows)
    print(table)
    result = {"machine": machine_info(tools=("haproxy",)), "args": vars(args), "summary": summary, **data}
    json_path, md_path = write_results("frames", result, "# python -m bench frames\n\n" + table)
    print(f"results: {json_path}  {md_path}")
    return 0
