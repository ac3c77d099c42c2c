"""``python -m bench tcp``: ferryman beside HAProxy and a direct connection, in one run.

Every target relays to the same C backends (echo, sink) and the same redis-server. The proxy under
test runs pinned to CPU 1; load generator and backends share CPU 0, so HAProxy (``nbthread 1``) and
ferryman each get exactly one core. Targets alternate inside every round (the order rotates) and
each figure is the median over rounds, so drift on a shared machine hits all targets alike.

Workloads: 64-byte ping-pong at 1/16/256 connections (msgs/s, one message in flight per connection),
bulk upload through the proxy (MB/s), connect + one 64-byte round trip + close (conns/s), and
redis-benchmark GET and SET (requests/s). For proxies, the CPU time the proxy process spent per
message is reported as well (µs/msg, from /proc/PID/stat).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench._common import (
    Processes,
    build,
    cpu_seconds,
    ensure_apt,
    free_port,
    machine,
    median,
    pinned,
    wait_port,
    write_results,
)

PROXY_CPU = 1
LOAD_CPU = 0
TARGETS = ("direct", "haproxy", "ferryman", "pyrelay")
WORKLOADS = ("pingpong-1", "pingpong-16", "pingpong-256", "bulk", "connrate", "redis-get", "redis-set")
UNITS = {"bulk": "MB/s", "connrate": "conns/s", "redis-get": "req/s", "redis-set": "req/s"}
SERVICES = ("echo", "sink", "redis")


def haproxy_config(ports: dict[str, int], backends: dict[str, int]) -> str:
    lines = [
        "global",
        "    nbthread 1",
        "    maxconn 4096",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
    ]
    for service in SERVICES:
        lines += [
            f"listen {service}",
            f"    bind 127.0.0.1:{ports[service]}",
            f"    server b1 127.0.0.1:{backends[service]}",
        ]
    return "\n".join(lines) + "\n"


def ferryman_config(ports: dict[str, int], backends: dict[str, int], admin_port: int, metrics_db: str | None) -> str:
    out = ["global: {access_log: null, log_level: warning}", "listeners:"]
    for service in SERVICES:
        out.append(
            f"  - {{name: {service}, bind: '127.0.0.1:{ports[service]}', mode: tcp, pool: {service}, "
            "max_connections: 20000}"
        )
    out.append("pools:")
    for service in SERVICES:
        out += [
            f"  - name: {service}",
            "    balance: consistent",
            "    health_check: {enabled: true, interval_s: 2.0}",
            f"    servers: [{{name: b1, address: '127.0.0.1:{backends[service]}'}}]",
        ]
    out.append(f"admin: {{bind: '127.0.0.1:{admin_port}', token: bench}}")
    if metrics_db is not None:
        out.append(f"metrics: {{db_path: '{metrics_db}'}}")
    return "\n".join(out) + "\n"


def loadgen(binary: pathlib.Path, mode: str, port: int, conns: int, duration_s: float, nbytes: int) -> tuple[int, int]:
    cmd = pinned(LOAD_CPU, [str(binary), mode, "127.0.0.1", str(port), str(conns), str(duration_s), str(nbytes)])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {mode} on port {port} failed: {out.stderr.strip()}")
    ops, moved, _ = out.stdout.split()
    return int(ops), int(moved)


def redis_benchmark(port: int, requests: int) -> dict[str, float]:
    cmd = pinned(
        LOAD_CPU,
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "get,set", "-n", str(requests), "-c", "50",
         "-P", "1", "--csv"],
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    result = {}
    for line in out.stdout.splitlines():
        parts = [p.strip('"') for p in line.split(",")]
        if len(parts) >= 2 and parts[0] in ("GET", "SET"):
            result[f"redis-{parts[0].lower()}"] = float(parts[1])
    if len(result) != 2:
        raise RuntimeError(f"redis-benchmark on port {port} gave no result: {out.stdout[-300:]} {out.stderr[-300:]}")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    loadgen_bin, backend_bin = build("loadgen"), build("backend")
    targets = [t for t in args.targets.split(",") if t]
    workloads = [w for w in args.workloads.split(",") if w]
    needs_redis = any(w.startswith("redis") for w in workloads)
    if "haproxy" in targets:
        ensure_apt("haproxy", "haproxy")
    if needs_redis:
        ensure_apt("redis-server", "redis-server")
        ensure_apt("redis-benchmark", "redis-tools")
    results: dict[str, dict[str, list[float]]] = {t: {w: [] for w in workloads} for t in targets}
    cpu: dict[str, dict[str, list[float]]] = {t: {w: [] for w in workloads} for t in targets}
    with Processes() as procs, tempfile.TemporaryDirectory() as tmp:
        backends: dict[str, int] = {}
        for service in ("echo", "sink"):
            backends[service] = free_port()
            procs.start(pinned(LOAD_CPU, [str(backend_bin), service, str(backends[service])]), ready_line=b"ready")
        backends["redis"] = free_port()
        if needs_redis:
            procs.start(
                pinned(LOAD_CPU, ["redis-server", "--port", str(backends["redis"]), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"]),
                stderr=subprocess.DEVNULL,
            )
            wait_port(backends["redis"])
        ports: dict[str, dict[str, int]] = {"direct": dict(backends)}
        pids: dict[str, int] = {}
        for target in targets:
            if target == "direct":
                continue
            ports[target] = {s: free_port() for s in SERVICES}
            if target == "haproxy":
                cfg = pathlib.Path(tmp, "haproxy.cfg")
                cfg.write_text(haproxy_config(ports[target], backends))
                proc = procs.start(pinned(PROXY_CPU, ["haproxy", "-db", "-f", str(cfg)]), stderr=subprocess.DEVNULL)
            elif target.startswith("ferryman"):
                admin = free_port()
                db = str(pathlib.Path(tmp, f"{target}.sqlite3")) if target == "ferryman-learner" else None
                cfg = pathlib.Path(tmp, f"{target}.yaml")
                cfg.write_text(ferryman_config(ports[target], backends, admin, db))
                proc = procs.start(pinned(PROXY_CPU, [sys.executable, "-m", "proxy", "run", "-c", str(cfg)]))
            elif target == "pyrelay":
                pairs = [f"{ports[target][s]}:{backends[s]}" for s in SERVICES]
                proc = procs.start(
                    pinned(PROXY_CPU, [sys.executable, "-m", "bench.pyrelay", *pairs]), ready_line=b"ready"
                )
            else:
                raise SystemExit(f"unknown target {target!r}")
            pids[target] = proc.pid
            for s in SERVICES:
                if s != "redis" or needs_redis:
                    wait_port(ports[target][s])
        for round_no in range(args.rounds):
            order = targets[round_no % len(targets):] + targets[: round_no % len(targets)]
            for workload in workloads:
                if workload == "redis-set":
                    continue  # measured together with redis-get
                for target in order:
                    p = ports[target]
                    before = cpu_seconds(pids[target]) if target in pids else None
                    if workload.startswith("pingpong"):
                        conns = int(workload.split("-")[1])
                        ops, _ = loadgen(loadgen_bin, "pingpong", p["echo"], conns, args.duration_s, 64)
                        got = {workload: ops / args.duration_s}
                        count = ops
                    elif workload == "bulk":
                        ops, moved = loadgen(loadgen_bin, "bulk", p["sink"], 2, args.duration_s, 65536)
                        got = {workload: moved / args.duration_s / 1e6}
                        count = moved // 65536  # per 64 KiB chunk
                    elif workload == "connrate":
                        ops, _ = loadgen(loadgen_bin, "connrate", p["echo"], 16, args.duration_s, 64)
                        got = {workload: ops / args.duration_s}
                        count = ops
                    elif workload == "redis-get":
                        got = redis_benchmark(p["redis"], args.redis_requests)
                        count = 2 * args.redis_requests
                        got = {k: v for k, v in got.items() if k in workloads}
                    else:
                        raise SystemExit(f"unknown workload {workload!r}")
                    for k, v in got.items():
                        results[target][k].append(v)
                    if before is not None:
                        used = cpu_seconds(pids[target]) - before
                        for k in got:
                            cpu[target][k].append(used / count * 1e6 if count else float("nan"))
                    print(f"round {round_no + 1} {workload:13} {target:16} " + " ".join(f"{k}={v:,.0f}" for k, v in got.items()),
                          file=sys.stderr, flush=True)
    return {
        "machine": machine(),
        "settings": {"duration_s": args.duration_s, "rounds": args.rounds, "redis_requests": args.redis_requests},
        "targets": targets,
        "workloads": workloads,
        "raw": results,
        "cpu_us_per_msg_raw": cpu,
        "median": {t: {w: median(v) for w, v in ws.items() if v} for t, ws in results.items()},
        "cpu_us_per_msg": {t: {w: median(v) for w, v in ws.items() if v} for t, ws in cpu.items()},
    }


def table(data: dict[str, Any]) -> str:
    targets, workloads = data["targets"], data["workloads"]
    med, cpu = data["median"], data["cpu_us_per_msg"]
    head = ["workload", *targets]
    ratio = "ferryman" in targets and "haproxy" in targets
    if ratio:
        head.append("ferryman / haproxy")
    if "ferryman-learner" in targets and "ferryman" in targets:
        head.append("learner on / off")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"

    for w in workloads:
        unit = UNITS.get(w, "msgs/s")
        cells = [f"{w} ({unit})", *[fmt(med.get(t, {}).get(w)) for t in targets]]
        if ratio:
            f, h = med["ferryman"].get(w), med["haproxy"].get(w)
            cells.append(f"{f / h:.2f}" if f and h else "-")
        if "ferryman-learner" in targets and "ferryman" in targets:
            f, lo = med["ferryman"].get(w), med["ferryman-learner"].get(w)
            cells.append(f"{lo / f:.2f}" if f and lo else "-")
        rows.append("| " + " | ".join(cells) + " |")
    for w in workloads:
        per = "per 64 KiB" if w == "bulk" else "per request" if w.startswith("redis") else "per conn" if w == "connrate" else "per msg"
        cells = [f"CPU µs {per}, {w}", *["-" if t == "direct" else fmt(cpu.get(t, {}).get(w)) for t in targets]]
        if ratio:
            f, h = cpu["ferryman"].get(w), cpu["haproxy"].get(w)
            cells.append(f"{f / h:.2f}" if f and h else "-")
        if "ferryman-learner" in targets and "ferryman" in targets:
            f, lo = cpu["ferryman"].get(w), cpu["ferryman-learner"].get(w)
            cells.append(f"{lo / f:.2f}" if f and lo else "-")
        rows.append("| " + " | ".join(cells) + " |")
    m = data["machine"]
    foot = (
        f"\n{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, uvloop "
        f"{m['packages'].get('uvloop')}, {m['haproxy']}, {m['redis']}; commit {m['commit']}; "
        f"{data['settings']['rounds']} rounds of {data['settings']['duration_s']} s, medians. "
        "pyrelay is a bare Python Protocol + uvloop splice (no counters, placement or health): the Python ceiling.\n"
    )
    return "\n".join(rows) + "\n" + foot


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench tcp", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration-s", type=float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the median (default 3)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma list of {', '.join(TARGETS)}, ferryman-learner")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    p.add_argument("--redis-requests", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="one short round (a smoke test, not a measurement)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration_s, args.rounds, args.redis_requests = 0.5, 1, 5_000
    started = time.monotonic()
    data = run(args)
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    md = table(data)
    json_path, md_path = write_results("tcp", data, md)
    print(md)
    print(f"wrote {json_path} and {md_path}")
    return 0
