"""Shared benchmark plumbing: machine facts, building the C helpers, processes, CPU accounting, results."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import pathlib
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = BENCH / "bin"
RESULTS = BENCH / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def run_text(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "n/a"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("uvloop", "aiohttp", "msgpack", "orjson", "xxhash", "river", "pydantic"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "haproxy": run_text(["haproxy", "-v"]),
        "redis": run_text(["redis-server", "--version"]),
        "commit": run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "dirty": run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]) != "n/a",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def build(name: str) -> pathlib.Path:
    """Compile ``bench/NAME.c`` into ``bench/bin/NAME`` unless it is up to date."""
    src = BENCH / f"{name}.c"
    out = BIN / name
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BIN.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    return out


def ensure_apt(binary: str, package: str) -> str:
    """Path of ``binary``, installing Debian's ``package`` with apt-get if it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    print(f"installing {package} with apt-get ...", file=sys.stderr, flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", package], check=True, env=env)
    found = shutil.which(binary)
    if not found:
        raise RuntimeError(f"{binary} not found after installing {package}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int | None, cmd: Sequence[str]) -> list[str]:
    """Pin to one CPU when the machine has more than one (so each proxy gets exactly one core)."""
    if cpu is None or (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return list(cmd)
    return ["taskset", "-c", str(cpu), *cmd]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its threads), in seconds."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_port(port: int, deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


class Processes:
    """Child processes of a benchmark; all stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: Sequence[str], *, ready_line: bytes | None = None, **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        if ready_line is not None:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(ready_line):
                raise RuntimeError(f"{cmd[0]} did not start: {line!r}")
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_results(name: str, data: dict[str, Any], markdown: str) -> tuple[pathlib.Path, pathlib.Path]:
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = RESULTS / f"{name}-{stamp}.json"
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    md_path = RESULTS / f"{name}-latest.md"
    md_path.write_text(markdown)
    return json_path, md_path


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    yield box
    box.append(time.perf_counter() - start)
