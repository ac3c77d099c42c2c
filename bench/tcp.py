"""``python -m bench tcp``: ferryman beside HAProxy, a bare Python relay and a direct connection, in one run.

Every target relays to the same C backends (``bench/echo.c`` in its echo, once, sink and source modes)
and the same redis-server. The proxy
under test runs pinned to CPU 1; the load generator, the backends and redis share CPU 0, so HAProxy
(``nbthread 1``) and ferryman each get exactly one core. Within every round each workload runs against
each target in turn (the order rotates), and each figure is the median over rounds, so drift on a
shared machine hits all targets alike.

Workloads: 64-byte ping-pong at 1/16/256 connections (msgs/s, one message in flight per connection),
bulk upload and download through the proxy (MB/s), connect + one 64-byte round trip + close (conns/s,
the server closing first), and redis-benchmark SET and GET (requests/s). For proxies, the CPU time the proxy process spent per
message in the measured window is reported too (µs, from utime+stime in /proc/PID/stat).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench._common import (
    ROOT,
    BenchError,
    CpuPlan,
    Processes,
    build_c,
    cpu_times_s,
    ensure_installed,
    fmt_number,
    free_ports,
    machine_info,
    markdown_table,
    median,
    pin_before_exec,
    pinned_self,
    start_haproxy,
    start_redis,
    wait_http_ok,
    wait_port,
    write_results,
)

#: Everything ``--only`` accepts; the default run leaves out ``ferryman-learner``.
TARGETS = ("direct", "haproxy", "ferryman", "pyrelay", "ferryman-learner")
DEFAULT_TARGETS = ("direct", "haproxy", "ferryman", "pyrelay")
#: Modes of ``bench/echo.c``, one server each; every target relays one listen port to each, and redis.
BACKEND_MODES = ("echo", "once", "sink", "source")
LABELS = {"pyrelay": "bare Python relay", "ferryman-learner": "ferryman + learner"}
READY_DEADLINE_S = 30.0


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    label: str
    tool: str  # "loadgen" or "redis"
    mode: str  # loadgen mode, or the redis-benchmark test
    service: str
    conns: int
    size_bytes: int
    unit: str  # of the rate
    per: str  # what one "message" of the CPU figure is


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "pingpong-1", "ping-pong 64 B, 1 conn", "loadgen", "pingpong", "echo", 1, 64, "msgs/s", "msg"
        ),
        Workload(
            "pingpong-16", "ping-pong 64 B, 16 conns", "loadgen", "pingpong", "echo", 16, 64, "msgs/s", "msg"
        ),
        Workload(
            "pingpong-256",
            "ping-pong 64 B, 256 conns",
            "loadgen",
            "pingpong",
            "echo",
            256,
            64,
            "msgs/s",
            "msg",
        ),
        Workload(
            "bulk-up",
            "bulk upload, 2 conns, 64 KiB writes",
            "loadgen",
            "upload",
            "sink",
            2,
            65536,
            "MB/s",
            "MB",
        ),
        Workload(
            "bulk-down", "bulk download, 2 conns", "loadgen", "download", "source", 2, 65536, "MB/s", "MB"
        ),
        Workload(
            "connrate",
            "connect + 64 B round trip + close, 16 at once",
            "loadgen",
            "connrate",
            "once",
            16,
            64,
            "conns/s",
            "conn",
        ),
        Workload(
            "redis-set", "redis-benchmark SET, 50 clients", "redis", "set", "redis", 50, 3, "req/s", "req"
        ),
        Workload(
            "redis-get", "redis-benchmark GET, 50 clients", "redis", "get", "redis", 50, 3, "req/s", "req"
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Measurement:
    """One workload against one target for one window."""

    rate: float  # in the workload's unit
    messages: float  # what the proxy's CPU time is divided by (round trips, MB, connections, requests)
    seconds: float
    proxy_cpu_s: float | None  # utime + stime; None for the direct target
    errors: int = 0
    proxy_system_s: float | None = None  # the stime part: kernel work done on the proxy's behalf
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def cpu_us_per_msg(self) -> float | None:
        if self.proxy_cpu_s is None or self.messages <= 0:
            return None
        return self.proxy_cpu_s / self.messages * 1e6


@dataclass(frozen=True, slots=True)
class Target:
    """A running target: the port it serves each backend service on, and the process to account CPU to."""

    name: str
    ports: Mapping[str, int]
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None


# -- measuring ------------------------------------------------------------------------------------


def _cpu(pid: int | None) -> tuple[float, float] | None:
    if pid is None:
        return None
    try:
        return cpu_times_s(pid)
    except OSError:
        raise BenchError(f"the proxy process {pid} is gone") from None


def _used(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> tuple[float | None, float | None]:
    """(utime + stime, stime) spent between two readings."""
    if before is None or after is None:
        return None, None
    return (after[0] - before[0]) + (after[1] - before[1]), after[1] - before[1]


def measure_loadgen(
    loadgen: pathlib.Path,
    workload: Workload,
    port: int,
    *,
    warmup_s: float,
    duration_s: float,
    proxy_pid: int | None,
    cpu: int | None,
) -> Measurement:
    """Run the C load generator against ``port``; the proxy's CPU is read at the edges of its window."""
    cmd = [
        str(loadgen),
        workload.mode,
        "127.0.0.1",
        str(port),
        str(workload.conns),
        f"{warmup_s:g}",
        f"{duration_s:g}",
        str(workload.size_bytes),
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=pin_before_exec(cpu),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()
        before = _cpu(proxy_pid)
        result = proc.stdout.readline()
        after = _cpu(proxy_pid)
    finally:
        proc.stdin.close()  # releases the connections it holds open
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stdout.close()
        proc.stderr.close()
    fields = result.split()
    if first.strip() != b"measure" or len(fields) != 5 or fields[0] != b"result":
        raise BenchError(
            f"loadgen {workload.mode} on port {port} failed (status {proc.returncode}): {err or 'no output'}"
        )
    ops, moved, seconds, errors = int(fields[1]), int(fields[2]), float(fields[3]), int(fields[4])
    cpu_s, system_s = _used(before, after)
    if workload.unit == "MB/s":
        return Measurement(
            moved / 1e6 / seconds, moved / 1e6, seconds, cpu_s, errors, proxy_system_s=system_s
        )
    return Measurement(ops / seconds, ops, seconds, cpu_s, errors, proxy_system_s=system_s)


def redis_benchmark(
    port: int, test: str, requests: int, clients: int, *, cpu: int | None
) -> dict[str, float]:
    """One redis-benchmark run of ``test``: its CSV row (rps and latency percentiles in ms)."""
    binary = ensure_installed("redis-benchmark", "redis-tools")
    cmd = [
        binary,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        test,
        "-n",
        str(requests),
        "-c",
        str(clients),
        "--csv",
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=pin_before_exec(cpu),
    )
    rows = list(csv.reader(done.stdout.splitlines()))
    if done.returncode != 0 or len(rows) < 2 or rows[0][:2] != ["test", "rps"] or rows[1][0] != test.upper():
        raise BenchError(
            f"redis-benchmark -t {test} on port {port} failed: {(done.stderr or done.stdout)[-400:]}"
        )
    return {key: float(value) for key, value in zip(rows[0][1:], rows[1][1:], strict=False)}


def measure_redis(
    workload: Workload,
    port: int,
    *,
    warmup_s: float,
    duration_s: float,
    proxy_pid: int | None,
    cpu: int | None,
) -> Measurement:
    """redis-benchmark has no time limit: a warm-up run sizes the measured run to about ``duration_s``."""
    warm_requests = max(200, int(20_000 * warmup_s))
    warm = redis_benchmark(port, workload.mode, warm_requests, workload.conns, cpu=cpu)
    requests = max(1000, round(warm["rps"] * duration_s, -3))
    before = _cpu(proxy_pid)
    started = time.perf_counter()
    row = redis_benchmark(port, workload.mode, int(requests), workload.conns, cpu=cpu)
    seconds = time.perf_counter() - started
    after = _cpu(proxy_pid)
    cpu_s, system_s = _used(before, after)
    extra = {k: v for k, v in row.items() if k != "rps"} | {"requests": float(requests)}
    return Measurement(row["rps"], requests, seconds, cpu_s, 0, proxy_system_s=system_s, extra=extra)


def measure(
    loadgen: pathlib.Path,
    workload: Workload,
    target: Target,
    *,
    warmup_s: float,
    duration_s: float,
    cpu: int | None,
) -> Measurement:
    port = target.ports[workload.service]
    if workload.tool == "redis":
        return measure_redis(
            workload, port, warmup_s=warmup_s, duration_s=duration_s, proxy_pid=target.pid, cpu=cpu
        )
    return measure_loadgen(
        loadgen, workload, port, warmup_s=warmup_s, duration_s=duration_s, proxy_pid=target.pid, cpu=cpu
    )


# -- targets --------------------------------------------------------------------------------------


def ferryman_config(
    listen: Mapping[str, int], backends: Mapping[str, int], admin_port: int, metrics_db: str | None = None
) -> str:
    """The proxy's YAML: one tcp listener and one single-server consistent-hash pool per service."""
    out = ["global: {access_log: null, log_level: warning}", "listeners:"]
    out += [f"  - {{name: {s}, bind: '127.0.0.1:{listen[s]}', mode: tcp, pool: {s}}}" for s in listen]
    out.append("pools:")
    for s in listen:
        out += [
            f"  - name: {s}",
            "    balance: consistent",
            "    health_check: {enabled: true, interval_s: 2.0}",
            "    servers:",
            f"      - {{name: b1, address: '127.0.0.1:{backends[s]}'}}",
        ]
    out.append(f"admin: {{bind: '127.0.0.1:{admin_port}', token: bench}}")
    if metrics_db is not None:
        out.append(f"metrics: {{db_path: '{metrics_db}'}}")
    return "\n".join(out) + "\n"


def start_target(name: str, procs: Processes, backends: Mapping[str, int], plan: CpuPlan) -> Target:
    """Start ``name`` relaying to ``backends``; ``BenchError`` (saying why) if it does not come up."""
    if name == "direct":
        return Target(name, dict(backends), None)
    listen = dict(zip(backends, free_ports(len(backends)), strict=True))
    if name == "haproxy":
        proc = start_haproxy(procs, {listen[s]: backends[s] for s in backends}, cpu=plan.proxy_cpu)
    elif name == "pyrelay":
        pairs = [f"{listen[s]}:{backends[s]}" for s in backends]
        proc = procs.start(
            name,
            [sys.executable, "-m", "bench.pyrelay", *pairs],
            cpu=plan.proxy_cpu,
            ready_line=b"ready",
            cwd=ROOT,
        )
    elif name in ("ferryman", "ferryman-learner"):
        (admin,) = free_ports(1)
        db = str(procs.log_dir / f"{name}.sqlite3") if name == "ferryman-learner" else None
        cfg = procs.log_dir / f"{name}.yaml"
        cfg.write_text(ferryman_config(listen, backends, admin, db))
        proc = procs.start(
            name, [sys.executable, "-m", "proxy", "run", "-c", str(cfg)], cpu=plan.proxy_cpu, cwd=ROOT
        )
        try:
            wait_http_ok(f"http://127.0.0.1:{admin}/readyz", deadline_s=READY_DEADLINE_S, proc=proc)
            for port in listen.values():
                wait_port(port, deadline_s=5.0, proc=proc)
        except BenchError as exc:
            procs.stop(proc)
            raise BenchError(
                f"{name} did not come up ({sys.executable} -m proxy run -c {cfg}): {exc}\n{procs.log_tail(proc)}"
            ) from None
    else:
        raise BenchError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return Target(name, listen, proc.pid, proc)


@dataclass(frozen=True, slots=True)
class Backends:
    """The servers every target relays to, all on the load CPU."""

    ports: Mapping[str, int]  # by service
    procs: Mapping[str, subprocess.Popen[bytes]]

    def check_alive(self, procs: Processes) -> None:
        """``BenchError`` if one has exited: every later figure would be a failure, not a measurement."""
        for service, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(
                    f"the {service} backend exited with status {proc.returncode}; {procs.log_tail(proc)}"
                )


def start_backends(procs: Processes, echo: pathlib.Path, plan: CpuPlan, *, redis: bool) -> Backends:
    """The C servers (one per mode of ``bench/echo.c``) and redis-server if asked, on the load CPU."""
    ports: dict[str, int] = {}
    started: dict[str, subprocess.Popen[bytes]] = {}
    for service in BACKEND_MODES:
        cmd = [str(echo), service, "0", str(WORKLOADS["connrate"].size_bytes)]
        started[service] = procs.start(service, cmd, cpu=plan.load_cpu, ready_line=b"ready ")
        ports[service] = int(procs.ready[started[service].pid].split()[1])  # "ready PORT"
    if redis:
        (ports["redis"],) = free_ports(1)
        started["redis"] = start_redis(procs, ports["redis"], cpu=plan.load_cpu)
    return Backends(ports, started)


@contextlib.contextmanager
def _work_dir(keep: pathlib.Path | None) -> Iterator[pathlib.Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="ferryman-bench-tcp-") as tmp:
        yield pathlib.Path(tmp)


# -- one run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    targets: tuple[str, ...]
    workloads: tuple[str, ...]
    duration_s: float
    warmup_s: float
    rounds: int


def run(settings: Settings, *, progress: bool = True, log_dir: pathlib.Path | None = None) -> dict[str, Any]:
    """Start the backends and targets, measure every workload on every target ``rounds`` times.

    Returns the results document (see ``summarise``).  A target that does not come up, or dies, is
    listed under ``failed`` with the reason; a single failed measurement under ``errors``.  Process
    logs and generated configs go to a temporary directory, or to ``log_dir`` (kept) when given.
    """
    plan = CpuPlan.detect()
    loadgen, echo = build_c("loadgen"), build_c("echo")
    workloads = [WORKLOADS[w] for w in settings.workloads]
    needs_redis = any(w.tool == "redis" for w in workloads)
    tools = []
    if "haproxy" in settings.targets:
        ensure_installed("haproxy", "haproxy")
        tools.append("haproxy")
    if needs_redis:
        ensure_installed("redis-server", "redis-server")
        ensure_installed("redis-benchmark", "redis-tools")
        tools.append("redis")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {w.name: [] for w in workloads} for t in settings.targets
    }
    failed: dict[str, str] = {}
    errors: list[dict[str, Any]] = []

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    started = time.monotonic()
    with (
        pinned_self(plan.load_cpu),
        _work_dir(log_dir) as work,
        Processes(work) as procs,
    ):
        backends = start_backends(procs, echo, plan, redis=needs_redis)
        running: dict[str, Target] = {}
        for name in settings.targets:
            try:
                running[name] = start_target(name, procs, backends.ports, plan)
            except BenchError as exc:
                failed[name] = str(exc)
                say(f"{name}: {exc}\n-> no {name} figures in this run")
        for round_no in range(settings.rounds):
            for index, workload in enumerate(workloads):
                order = [t for t in settings.targets if t in running]
                shift = (round_no + index) % len(order) if order else 0
                for name in order[shift:] + order[:shift]:
                    backends.check_alive(procs)
                    target = running[name]
                    if target.proc is not None and target.proc.poll() is not None:
                        failed[name] = (
                            f"{name} exited with status {target.proc.returncode} during the run; "
                            + (procs.log_tail(target.proc))
                        )
                        say(failed[name])
                        del running[name]
                        continue
                    try:
                        m = measure(
                            loadgen,
                            workload,
                            target,
                            warmup_s=settings.warmup_s,
                            duration_s=settings.duration_s,
                            cpu=plan.load_cpu,
                        )
                    except BenchError as exc:
                        errors.append(
                            {"round": round_no, "target": name, "workload": workload.name, "error": str(exc)}
                        )
                        say(f"round {round_no + 1}: {workload.name} on {name} failed: {exc}")
                        continue
                    raw[name][workload.name].append(
                        {
                            "round": round_no,
                            **asdict(m),
                            "extra": dict(m.extra),
                            "cpu_us_per_msg": m.cpu_us_per_msg,
                        }
                    )
                    cpu = (
                        "" if m.cpu_us_per_msg is None else f"  {m.cpu_us_per_msg:8.2f} CPU µs/{workload.per}"
                    )
                    say(
                        f"round {round_no + 1}/{settings.rounds}  {workload.name:13} {name:16} "
                        f"{m.rate:>12,.1f} {workload.unit}{cpu}"
                        + (f"  ({m.errors} errors)" if m.errors else "")
                    )
    return summarise(settings, plan, tools, raw, failed, errors, elapsed_s=time.monotonic() - started)


def summarise(
    settings: Settings,
    plan: CpuPlan,
    tools: Sequence[str],
    raw: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    failed: Mapping[str, str],
    errors: Sequence[Mapping[str, Any]],
    *,
    elapsed_s: float,
) -> dict[str, Any]:
    """The results document: machine, settings, raw figures per round, and medians over rounds."""
    medians: dict[str, dict[str, dict[str, float | None]]] = {}
    for target, per_workload in raw.items():
        medians[target] = {}
        for workload, rows in per_workload.items():
            if not rows:
                continue
            rates = [r["rate"] for r in rows]
            cpus = [r["cpu_us_per_msg"] for r in rows if r["cpu_us_per_msg"] is not None]
            medians[target][workload] = {
                "rate": median(rates),
                "min": min(rates),
                "max": max(rates),
                "cpu_us_per_msg": median(cpus) if cpus else None,
            }
    return {
        "benchmark": "tcp",
        "machine": machine_info(tools=tools),
        "settings": {
            **asdict(settings),
            "proxy_cpu": plan.proxy_cpu,
            "load_cpu": plan.load_cpu,
        },
        "workloads": {
            name: {
                "label": w.label,
                "unit": w.unit,
                "cpu_per": w.per,
                "conns": w.conns,
                "size_bytes": w.size_bytes,
            }
            for name, w in WORKLOADS.items()
            if name in settings.workloads
        },
        "failed": dict(failed),
        "errors": list(errors),
        "raw": raw,
        "median": medians,
        "elapsed_s": round(elapsed_s, 1),
    }


# -- the table ------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def render_markdown(data: Mapping[str, Any]) -> str:
    """workload | direct | haproxy | ferryman | ferryman/haproxy | other targets; rates, then CPU µs rows."""
    targets: list[str] = list(data["settings"]["targets"])
    main_cols = [t for t in ("direct", "haproxy", "ferryman") if t in targets]
    ratio = "ferryman" in targets and "haproxy" in targets
    rest = [t for t in targets if t not in main_cols]
    med, failed = data["median"], data["failed"]

    def value(target: str, workload: str, key: str) -> float | None:
        got = med.get(target, {}).get(workload)
        return None if got is None else got[key]

    def cell(target: str, workload: str, key: str) -> str:
        if key == "cpu_us_per_msg" and target == "direct":
            return "n/a"
        v = value(target, workload, key)
        if v is None and target in failed and not med.get(target):
            return "did not run"
        return fmt_number(v)

    header = [
        "workload",
        *main_cols,
        *(["ferryman/haproxy"] if ratio else []),
        *(LABELS.get(t, t) for t in rest),
    ]
    rows = []
    for key in ("rate", "cpu_us_per_msg"):
        for name, w in data["workloads"].items():
            label = f"{w['label']} ({w['unit']})" if key == "rate" else f"CPU µs/{w['cpu_per']}: {w['label']}"
            row = [label, *(cell(t, name, key) for t in main_cols)]
            if ratio:
                row.append(_ratio(value("ferryman", name, key), value("haproxy", name, key)))
            row += [cell(t, name, key) for t in rest]
            rows.append(row)
    m, s = data["machine"], data["settings"]
    pinning = (
        f"proxy on CPU {s['proxy_cpu']}, load generator and backends on CPU {s['load_cpu']}"
        if s["proxy_cpu"] is not None
        else "not pinned (fewer than 2 CPUs)"
    )
    notes = [
        "",
        f"Medians of {s['rounds']} round(s) of {s['duration_s']:g} s after {s['warmup_s']:g} s of warm-up; {pinning}. "
        "ferryman/haproxy above 1 means ferryman is faster on rate rows and uses more CPU on CPU rows. "
        "CPU µs rows are the proxy process's utime+stime in the window divided by messages "
        "(round trips, MB, connections or requests).",
        "",
        f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; Python {m['python']}, uvloop "
        f"{m['packages'].get('uvloop', 'n/a')}, HAProxy {m.get('haproxy', 'n/a')}, redis {m.get('redis', 'n/a')}; "
        f"commit {m['commit'][:12]}{' (dirty)' if m.get('dirty') else ''}; {m['date']}.",
    ]
    for name, why in data["failed"].items():
        lines = [line.strip() for line in why.splitlines() if line.strip()]
        reason = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
        notes.append(f"\n**{name} did not run**: {reason}")
    if data["errors"]:
        notes.append(f"\n{len(data['errors'])} measurement(s) failed; see `errors` in the JSON.")
    return markdown_table(header, rows) + "\n".join(notes) + "\n"


# -- command line ---------------------------------------------------------------------------------


def _names(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}"
        )
    return names


def estimate_s(settings: Settings) -> float:
    per = settings.warmup_s + settings.duration_s + 0.1  # start-up and teardown of the load generator
    redis = sum(WORKLOADS[w].tool == "redis" for w in settings.workloads) * 0.3  # warm-up run, sizing
    return settings.rounds * len(settings.targets) * (len(settings.workloads) * per + redis) + 5


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench tcp", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--only",
        type=lambda s: _names(s, TARGETS, "target"),
        default=DEFAULT_TARGETS,
        metavar="T1,T2",
        help=f"targets, in column order (default {','.join(DEFAULT_TARGETS)}; "
        f"also {', '.join(t for t in TARGETS if t not in DEFAULT_TARGETS)})",
    )
    p.add_argument(
        "--workloads",
        type=lambda s: _names(s, tuple(WORKLOADS), "workload"),
        default=tuple(WORKLOADS),
        metavar="W1,W2",
        help=f"workloads (default all: {','.join(WORKLOADS)})",
    )
    p.add_argument(
        "--duration-s", type=float, default=None, help="measured seconds per workload and target (2)"
    )
    p.add_argument(
        "--warmup-s", type=float, default=None, help="warm-up seconds before each measurement (0.5)"
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds; each figure is the median (3)")
    p.add_argument("--quick", action="store_true", help="one short round: a smoke test, not a measurement")
    p.add_argument("--log-dir", type=pathlib.Path, default=None, help="keep process logs and configs here")
    p.add_argument("--results-dir", type=pathlib.Path, default=None, help="where to write (bench/results)")
    args = p.parse_args(argv)
    quick = args.quick
    settings = Settings(
        targets=args.only,
        workloads=args.workloads,
        duration_s=args.duration_s if args.duration_s is not None else 0.3 if quick else 2.0,
        warmup_s=args.warmup_s if args.warmup_s is not None else 0.1 if quick else 0.5,
        rounds=args.rounds if args.rounds is not None else 1 if quick else 3,
    )
    if settings.duration_s <= 0 or settings.warmup_s < 0 or settings.rounds < 1:
        p.error("--duration-s must be > 0, --warmup-s >= 0 and --rounds >= 1")
    print(
        f"bench tcp: {', '.join(settings.targets)} x {len(settings.workloads)} workloads x {settings.rounds} "
        f"round(s), about {estimate_s(settings) / 60:.1f} min",
        file=sys.stderr,
        flush=True,
    )
    try:
        data = run(settings, log_dir=args.log_dir)
    except BenchError as exc:
        print(f"bench tcp: {exc}", file=sys.stderr)
        return 1
    md = render_markdown(data)
    kw = {} if args.results_dir is None else {"out_dir": args.results_dir}
    json_path, md_path = write_results("tcp", data, md, **kw)
    print(md)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 1 if data["failed"] or data["errors"] else 0
