"""Smoke tests of ``python -m bench tcp``: the C helpers build, and every measurement path works end to end.

Nothing here asserts speed (that is what the benchmark itself is for): windows are a fraction of a
second and the assertions are about counts, shapes and failure reports.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import orjson
import pytest

from bench import __main__ as dispatcher
from bench import tcp
from bench._common import (
    BenchError,
    CpuPlan,
    Processes,
    build_c,
    cpu_time_s,
    free_ports,
    haproxy_tcp_config,
    start_redis,
    wait_http_ok,
)

UNPINNED = CpuPlan(proxy_cpu=None, load_cpu=None)  # leave the test process's affinity alone
WARMUP_S, WINDOW_S = 0.03, 0.1
LOADGEN_WORKLOADS = [name for name, w in tcp.WORKLOADS.items() if w.tool == "loadgen"]
HAVE_REDIS = bool(shutil.which("redis-server") and shutil.which("redis-benchmark"))


@pytest.fixture(scope="module")
def binaries() -> dict[str, pathlib.Path]:
    """The C programs, built where the benchmark builds them (so a stale binary is rebuilt too)."""
    return {name: build_c(name) for name in ("loadgen", "echo")}


@pytest.fixture
def procs(tmp_path: pathlib.Path):
    with Processes(tmp_path) as running:
        yield running


@pytest.fixture
def backends(procs: Processes, binaries: dict[str, pathlib.Path]) -> tcp.Backends:
    return tcp.start_backends(procs, binaries["echo"], UNPINNED, redis=False)


@pytest.mark.parametrize("name", ["loadgen", "echo"])
def test_c_programs_compile_cleanly(name: str, tmp_path: pathlib.Path) -> None:
    out = build_c(name, out_dir=tmp_path, force=True)
    assert os.access(out, os.X_OK)
    strict = subprocess.run(
        ["gcc", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", str(tcp.ROOT / "bench" / f"{name}.c")],
        capture_output=True,
        text=True,
    )
    assert strict.returncode == 0, strict.stderr


def test_loadgen_rejects_bad_arguments(binaries: dict[str, pathlib.Path]) -> None:
    done = subprocess.run([str(binaries["loadgen"]), "pingpong", "127.0.0.1", "1"], capture_output=True)
    assert done.returncode == 2


@pytest.mark.parametrize("workload", LOADGEN_WORKLOADS)
def test_each_loadgen_workload_moves_data_directly(
    workload: str, backends: tcp.Backends, binaries: dict[str, pathlib.Path]
) -> None:
    w = tcp.WORKLOADS[workload]
    m = tcp.measure_loadgen(
        binaries["loadgen"],
        w,
        backends.ports[w.service],
        warmup_s=WARMUP_S,
        duration_s=WINDOW_S,
        proxy_pid=None,
        cpu=None,
    )
    assert m.messages > 0 and m.rate > 0
    assert m.seconds == pytest.approx(WINDOW_S)
    assert m.errors == 0
    assert m.proxy_cpu_s is None and m.cpu_us_per_msg is None  # direct: nothing to account


def test_loadgen_failure_is_reported_not_counted(binaries: dict[str, pathlib.Path]) -> None:
    (closed,) = free_ports(1)
    with pytest.raises(BenchError, match="loadgen pingpong"):
        tcp.measure_loadgen(
            binaries["loadgen"],
            tcp.WORKLOADS["pingpong-1"],
            closed,
            warmup_s=0.0,
            duration_s=WINDOW_S,
            proxy_pid=None,
            cpu=None,
        )


def test_proxy_cpu_is_accounted_through_the_bare_relay(procs: Processes, backends: tcp.Backends) -> None:
    target = tcp.start_target("pyrelay", procs, backends.ports, UNPINNED)
    assert target.pid is not None and set(target.ports) == set(backends.ports)
    m = tcp.measure(
        build_c("loadgen"),
        tcp.WORKLOADS["pingpong-16"],
        target,
        warmup_s=WARMUP_S,
        duration_s=WINDOW_S,
        cpu=None,
    )
    assert m.messages > 0
    assert m.proxy_cpu_s is not None and m.proxy_cpu_s >= 0
    assert m.cpu_us_per_msg is not None


def test_cpu_time_reads_proc_stat() -> None:
    assert cpu_time_s(os.getpid()) > 0
    pid_max = int(pathlib.Path("/proc/sys/kernel/pid_max").read_text())
    with pytest.raises(OSError):
        cpu_time_s(pid_max + 1)  # no such process


@pytest.mark.skipif(not HAVE_REDIS, reason="redis-server and redis-benchmark are not installed")
def test_redis_benchmark_workloads_directly(procs: Processes) -> None:
    (port,) = free_ports(1)
    start_redis(procs, port, cpu=None)
    for name in ("redis-set", "redis-get"):
        m = tcp.measure_redis(
            tcp.WORKLOADS[name], port, warmup_s=0.01, duration_s=0.01, proxy_pid=None, cpu=None
        )
        assert m.rate > 0 and m.messages >= 1000
        assert "p50_latency_ms" in m.extra


def test_main_writes_json_and_markdown(tmp_path: pathlib.Path) -> None:
    workloads = ["pingpong-16", "bulk-down", "connrate"]
    code = tcp.main(
        [
            "--only", "direct",
            "--workloads", ",".join(workloads),
            "--duration-s", str(WINDOW_S),
            "--warmup-s", str(WARMUP_S),
            "--rounds", "2",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    (json_path,) = tmp_path.glob("tcp-*.json")
    data = orjson.loads(json_path.read_bytes())
    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["kernel"] and machine["python"] and machine["commit"]
    assert "uvloop" in machine["packages"]
    assert data["settings"]["rounds"] == 2 and data["settings"]["targets"] == ["direct"]
    assert data["failed"] == {} and data["errors"] == []
    for w in workloads:
        rows = data["raw"]["direct"][w]
        assert [r["round"] for r in rows] == [0, 1]
        assert all(r["rate"] > 0 and r["messages"] > 0 and r["cpu_us_per_msg"] is None for r in rows)
        assert data["median"]["direct"][w]["rate"] > 0
    md = (tmp_path / "tcp-latest.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "| workload | direct |"
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + 2 * len(workloads)  # header, a rate row and a CPU row per workload
    assert all(line.endswith("| n/a |") for line in table if line.startswith("| CPU"))


def _fake_measurements(targets: list[str], rates: dict[str, float]) -> dict:
    raw = {
        t: {"pingpong-1": [{"rate": rates[t], "cpu_us_per_msg": None if t == "direct" else 10.0}]}
        for t in targets
    }
    settings = tcp.Settings(tuple(targets), ("pingpong-1",), duration_s=1.0, warmup_s=0.1, rounds=1)
    return tcp.summarise(settings, CpuPlan(1, 0), [], raw, {}, [], elapsed_s=1.0)


def test_table_columns_and_ratio() -> None:
    targets = ["direct", "haproxy", "ferryman", "pyrelay"]
    data = _fake_measurements(
        targets, {"direct": 400.0, "haproxy": 200.0, "ferryman": 100.0, "pyrelay": 150.0}
    )
    lines = tcp.render_markdown(data).splitlines()
    assert lines[0] == "| workload | direct | haproxy | ferryman | ferryman/haproxy | bare Python relay |"
    assert lines[2] == "| ping-pong 64 B, 1 conn (msgs/s) | 400 | 200 | 100 | 0.50 | 150 |"
    assert lines[3] == "| CPU µs/msg: ping-pong 64 B, 1 conn | n/a | 10.0 | 10.0 | 1.00 | 10.0 |"


def test_table_says_which_target_did_not_run() -> None:
    data = _fake_measurements(["direct", "haproxy"], {"direct": 400.0, "haproxy": 200.0})
    data["settings"]["targets"] = ("direct", "haproxy", "ferryman")
    data["failed"]["ferryman"] = "ferryman did not come up: /readyz did not answer 200\nlog tail"
    md = tcp.render_markdown(data)
    assert md.splitlines()[0] == "| workload | direct | haproxy | ferryman | ferryman/haproxy |"
    assert "| 400 | 200 | did not run | n/a |" in md
    assert "**ferryman did not run**: ferryman did not come up" in md


def test_ferryman_config_passes_the_proxy_schema() -> None:
    from proxy.conf.loader import load_config_text

    listen = {"echo": 7001, "redis": 7002}
    config = load_config_text(tcp.ferryman_config(listen, {"echo": 9001, "redis": 9002}, 7900))
    assert [(lst.name, lst.bind, lst.mode, lst.pool) for lst in config.listeners] == [
        ("echo", "127.0.0.1:7001", "tcp", "echo"),
        ("redis", "127.0.0.1:7002", "tcp", "redis"),
    ]
    assert [(p.balance, p.servers[0].address) for p in config.pools] == [
        ("consistent", "127.0.0.1:9001"),
        ("consistent", "127.0.0.1:9002"),
    ]
    assert config.admin is not None and config.admin.bind == "127.0.0.1:7900"


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")
def test_haproxy_accepts_the_generated_config(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_tcp_config({7001: 9001, 7002: 9002}))
    done = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "nbthread 1" in cfg.read_text() and "mode tcp" in cfg.read_text()


def test_a_proxy_that_exits_is_reported_with_its_status(procs: Processes) -> None:
    proc = procs.start("dies", [sys.executable, "-c", "raise SystemExit(3)"], cpu=None)
    with pytest.raises(BenchError, match="exited with status 3"):
        wait_http_ok(f"http://127.0.0.1:{free_ports(1)[0]}/readyz", deadline_s=30, proc=proc)


def test_unknown_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        tcp.main(["--only", "direct,nginx"])
    assert exc.value.code == 2
    assert "unknown target nginx" in capsys.readouterr().err


def test_dispatcher_lists_runs_and_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dispatcher.main([]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("tcp", "usage", "forecast", "scale", "migrate"))
    assert dispatcher.main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    monkeypatch.setitem(dispatcher.REGISTRY, "not_written_yet", "a benchmark without a module")
    assert dispatcher.main(["not_written_yet"]) == 2
    err = capsys.readouterr().err
    assert "not part of this build yet" in err and "tcp" in err
    seen: list[list[str]] = []
    monkeypatch.setattr(tcp, "main", lambda args: seen.append(args) or 0)
    assert dispatcher.main(["tcp", "--quick"]) == 0
    assert seen == [["--quick"]]
