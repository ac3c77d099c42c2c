"""Plumbing shared by the benchmarks: machine facts, C helpers, pinned processes, CPU accounting, results.

Every benchmark writes ``bench/results/<name>-<UTC stamp>.json`` (``machine_info()`` plus raw figures)
and ``bench/results/<name>-latest.md`` through ``write_results``.  Processes started through
``Processes`` are pinned with ``sched_setaffinity`` before they exec, and stopped (by pid) on exit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import math
import os
import pathlib
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = BENCH / "bin"
RESULTS = BENCH / "results"
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PACKAGES = ("uvloop", "aiohttp", "msgpack", "orjson", "xxhash", "river", "pydantic", "numpy")


class BenchError(RuntimeError):
    """A benchmark could not run (a tool is missing, a process did not come up); the message says why."""


# -- machine and versions -------------------------------------------------------------------------


def first_line(cmd: Sequence[str]) -> str:
    """First line a command prints (stdout, else stderr), or ``"n/a"`` when it cannot run."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "n/a"


def git_commit() -> dict[str, Any]:
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    try:
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        dirty: bool | None = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        dirty = None
    return {"commit": commit, "dirty": dirty}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def haproxy_version() -> str:
    line = first_line(["haproxy", "-v"])  # "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://..."
    parts = line.split()
    return parts[2] if len(parts) > 2 and parts[:2] == ["HAProxy", "version"] else line


def redis_version() -> str:
    line = first_line(["redis-server", "--version"])  # "Redis server v=7.0.15 sha=... malloc=..."
    for part in line.split():
        if part.startswith("v="):
            return part[2:]
    return line


def machine_info(*, tools: Sequence[str] = ()) -> dict[str, Any]:
    """CPU model, cores, kernel, Python and package versions, git commit; ``tools`` adds haproxy/redis."""
    packages = {}
    for pkg in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[pkg] = importlib.metadata.version(pkg)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": packages,
        **git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if "haproxy" in tools:
        info["haproxy"] = haproxy_version()
    if "redis" in tools:
        info["redis"] = redis_version()
    return info


# -- tools: C helpers and packages ----------------------------------------------------------------


def build_c(name: str, *, out_dir: pathlib.Path = BIN, force: bool = False) -> pathlib.Path:
    """Compile ``bench/NAME.c`` with ``gcc -O2`` into ``out_dir/NAME`` unless that is newer than the source."""
    src = BENCH / f"{name}.c"
    out = out_dir / name
    if force or not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        if not shutil.which("gcc"):
            raise BenchError("gcc is needed to build the load generator (apt-get install -y gcc)")
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{name}.{os.getpid()}")  # atomic: a concurrent run never sees half a binary
        done = subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(src)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BenchError(f"gcc failed on {src}:\n{done.stderr}")
        tmp.replace(out)
    return out


def ensure_installed(binary: str, package: str) -> str:
    """Path of ``binary``, installing the Debian ``package`` with apt-get first when it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    print(f"{binary} is missing: apt-get install -y {package} ...", file=sys.stderr, flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([*sudo, "apt-get", "update", "-qq"], [*sudo, "apt-get", "install", "-y", "-qq", package]):
        if subprocess.run(cmd, env=env).returncode != 0:
            raise BenchError(f"could not install {package} ({' '.join(cmd)} failed); install it and rerun")
    found = shutil.which(binary)
    if not found:
        raise BenchError(f"{binary} is still missing after installing {package}")
    return found


# -- ports, CPUs, processes -----------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open together while choosing, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which CPU runs the proxy under test and which runs everything else (None: do not pin)."""

    proxy_cpu: int | None
    load_cpu: int | None

    @classmethod
    def detect(cls) -> CpuPlan:
        """Proxy on CPU 1, load on CPU 0, when this process may use both; else no pinning at all."""
        allowed = os.sched_getaffinity(0)
        if {0, 1} <= allowed:
            return cls(proxy_cpu=1, load_cpu=0)
        return cls(proxy_cpu=None, load_cpu=None)

    @property
    def pinned(self) -> bool:
        return self.proxy_cpu is not None


@contextlib.contextmanager
def pinned_self(cpu: int | None) -> Iterator[None]:
    """Run this (mostly idle) orchestrating process on ``cpu``, restoring its affinity afterwards."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_times_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of process ``pid`` (all its threads) from /proc/PID/stat, in seconds."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and parentheses
    # proc(5): fields 14 and 15 (utime, stime) in clock ticks; fields[0] here is field 3 (state)
    return int(fields[11]) / CLOCK_TICKS_PER_S, int(fields[12]) / CLOCK_TICKS_PER_S


def cpu_time_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    return sum(cpu_times_s(pid))


def pin_before_exec(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpu`` (None: leave its affinity alone)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Processes:
    """Child processes of one benchmark run, each optionally pinned to a CPU; all stopped on exit."""

    def __init__(self, log_dir: pathlib.Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, pathlib.Path] = {}
        self.ready: dict[int, bytes] = {}

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cpu: int | None,
        ready_line: bytes | None = None,
        ready_timeout_s: float = 15.0,
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` pinned to ``cpu``; stderr goes to ``<log_dir>/<name>.log`` (see ``log_tail``).

        With ``ready_line``, wait for the process to print a line starting with it on stdout; the whole
        line is kept in ``ready[proc.pid]``.
        """
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if ready_line is not None else subprocess.DEVNULL,
                stderr=err,
                preexec_fn=pin_before_exec(cpu),
                **popen,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        if ready_line is not None:
            assert proc.stdout is not None
            line = read_line(proc.stdout, ready_timeout_s)
            if not line.startswith(ready_line):
                raise BenchError(f"{name} did not start (printed {line!r}): {self.log_tail(proc)}")
            self.ready[proc.pid] = line
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        log = self.logs.get(proc.pid)
        text = log.read_text(errors="replace") if log and log.exists() else ""
        tail = "\n".join(text.strip().splitlines()[-lines:])
        return f"log {log}:\n{tail}" if tail else f"(nothing in {log})"

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def read_line(stream: IO[bytes], timeout_s: float) -> bytes:
    """One line from a child's pipe, or b"" if none arrives within ``timeout_s``."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return b""
    return stream.readline()


def wait_port(port: int, *, deadline_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts on 127.0.0.1:``port``."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"process exited with status {proc.returncode} before listening on {port}")
        if time.monotonic() > end:
            raise BenchError(f"nothing listens on 127.0.0.1:{port} after {deadline_s:g} s")
        time.sleep(0.05)  # polling a child's readiness, not a test


def wait_http_ok(url: str, *, deadline_s: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    while True:
        try:
            with direct.open(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"process exited with status {proc.returncode} ({url}: {last})")
        if time.monotonic() > end:
            raise BenchError(f"{url} did not answer 200 within {deadline_s:g} s (last: {last})")
        time.sleep(0.1)  # polling a child's readiness, not a test


# -- HAProxy and redis ----------------------------------------------------------------------------


def haproxy_tcp_config(routes: Mapping[int, int], *, maxconn: int | None = None, timeout_s: int = 60) -> str:
    """A ``mode tcp``, one-thread HAProxy config relaying each listen port to its loopback backend port.

    ``maxconn`` defaults to what the file-descriptor limit allows (HAProxy refuses to start when
    ``2 * maxconn`` descriptors cannot be had), at most 20000.
    """
    if maxconn is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        maxconn = max(256, min(20000, (soft - 200) // 2)) if soft != resource.RLIM_INFINITY else 20000
    lines = [
        "global",
        "    nbthread 1",
        f"    maxconn {maxconn}",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        f"    timeout client {timeout_s}s",
        f"    timeout server {timeout_s}s",
    ]
    for listen, backend in routes.items():
        lines += [
            f"listen bench_{listen}",
            f"    bind 127.0.0.1:{listen}",
            f"    server b1 127.0.0.1:{backend}",
        ]
    return "\n".join(lines) + "\n"


def start_haproxy(procs: Processes, routes: Mapping[int, int], *, cpu: int | None) -> subprocess.Popen[bytes]:
    """HAProxy in the foreground (``-db``) with ``haproxy_tcp_config(routes)``, listening when this returns."""
    binary = ensure_installed("haproxy", "haproxy")
    cfg = procs.log_dir / "haproxy.cfg"
    cfg.write_text(haproxy_tcp_config(routes))
    check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"haproxy rejects the generated config:\n{check.stderr}")
    proc = procs.start("haproxy", [binary, "-db", "-f", str(cfg)], cpu=cpu)
    try:
        for port in routes:
            wait_port(port, proc=proc)
    except BenchError as exc:
        raise BenchError(f"haproxy did not come up: {exc}\n{procs.log_tail(proc)}") from None
    return proc


def start_redis(procs: Processes, port: int, *, cpu: int | None) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on ``port`` (no persistence), accepting when this returns."""
    binary = ensure_installed("redis-server", "redis-server")
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(procs.log_dir),
    ]
    proc = procs.start("redis", cmd, cpu=cpu)
    try:
        wait_port(port, proc=proc)
    except BenchError as exc:
        raise BenchError(f"redis-server did not come up: {exc}\n{procs.log_tail(proc)}") from None
    return proc


# -- results --------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def fmt_number(value: float | None) -> str:
    """Thousands separators for large figures, one decimal below 100, ``n/a`` when missing."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}" if abs(value) >= 1 else f"{value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str, data: Mapping[str, Any], markdown: str, *, out_dir: pathlib.Path = RESULTS
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``<name>-<UTC stamp>.json`` and ``<name>-latest.md`` into ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = out_dir / f"{name}-{stamp}.json"
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    md_path = out_dir / f"{name}-latest.md"
    md_path.write_text(markdown)
    return json_path, md_path
