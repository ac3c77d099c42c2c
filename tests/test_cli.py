"""The ``ferryman`` command as a real process: check, run, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys

from tests.support import Backend, ProxyProcess, config_text, roundtrip

ROOT = pathlib.Path(__file__).resolve().parent.parent


async def ferryman(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_check_accepts_the_minimal_file() -> None:
    code, _out, err = await ferryman("check", "-c", str(ROOT / "config" / "minimal.yaml"))
    assert code == 0, err


async def test_check_reports_every_error_with_position(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listeners:\n"
        "  - {name: a, bind: '127.0.0.1:7000', mode: tcp, pool: nope}\n"
        "pools:\n"
        "  - name: game\n"
        "    colour: blue\n"
        "    servers: [{name: s1, address: 'nowhere'}]\n"
    )
    code, _out, err = await ferryman("check", "-c", str(bad))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) >= 3
    for line in lines:
        file, lineno, col, rest = line.split(":", 3)
        assert file == str(bad) and lineno.isdigit() and col.isdigit() and rest.strip()
    assert any("colour" in line for line in lines)


async def test_check_missing_file() -> None:
    code, _, err = await ferryman("check", "-c", "/nonexistent/ferryman.yaml")
    assert code == 1 and "/nonexistent/ferryman.yaml" in err


async def start_run(path: pathlib.Path) -> ProxyProcess:
    return await ProxyProcess.start(path)


async def test_run_reload_on_sighup_and_drain_on_sigterm(tmp_path) -> None:
    b1 = await Backend("b1").start()
    b2 = await Backend("b2").start()
    path = tmp_path / "ferryman.yaml"
    path.write_text(config_text([b1.address], global_="log_level: debug, drain_timeout_s: 30"))
    p = await start_run(path)
    started = await p.event("proxy_started")
    host, port = started["listeners"]["front"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert await roundtrip(reader, writer, b"one") == b"b1: one"

    path.write_text(config_text([b1.address, b2.address], global_="log_level: debug, drain_timeout_s: 30"))
    p.proc.send_signal(signal.SIGHUP)
    reloaded = await p.event("config_reloaded")
    assert "pool game updated" in reloaded["changes"]

    path.write_text("listeners: [")  # broken YAML: the old config stays
    p.proc.send_signal(signal.SIGHUP)
    rejected = await p.event("config_reload_rejected")
    assert rejected["errors"][0].startswith(str(path))
    assert await roundtrip(reader, writer, b"two") == b"b1: two"

    p.proc.send_signal(signal.SIGTERM)
    await p.event("drain_started")
    assert await roundtrip(reader, writer, b"three") == b"b1: three"  # still served while draining
    writer.close()
    await p.event("drain_finished")
    async with asyncio.timeout(30):
        assert await p.proc.wait() == 0
    await b1.stop()
    await b2.stop()


async def test_second_signal_stops_hard(tmp_path) -> None:
    b1 = await Backend("b1").start()
    path = tmp_path / "ferryman.yaml"
    path.write_text(config_text([b1.address], global_="drain_timeout_s: 600"))
    p = await start_run(path)
    started = await p.event("proxy_started")
    host, port = started["listeners"]["front"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert await roundtrip(reader, writer, b"x") == b"b1: x"
    p.proc.send_signal(signal.SIGTERM)
    await p.event("drain_started")
    p.proc.send_signal(signal.SIGTERM)
    await p.event("stop_forced")
    async with asyncio.timeout(30):
        assert await p.proc.wait() == 0
        assert await reader.read() == b""
    writer.close()
    await b1.stop()


async def test_run_with_port_in_use_fails_cleanly(tmp_path) -> None:
    b1 = await Backend("b1").start()
    path = tmp_path / "ferryman.yaml"
    path.write_text(config_text([b1.address]).replace("bind: '127.0.0.1:0'", f"bind: '{b1.address}'", 1))
    code, _, err = await ferryman("run", "-c", str(path))
    assert code == 1 and "startup_failed" in err
    await b1.stop()


async def test_demo_runs_and_stops(tmp_path) -> None:
    code, out, err = await ferryman("demo", "--duration-s", "2", "--port", "0", "--admin-port", "0", "--clients", "6")
    assert code == 0, err
    assert "admin" in out and "http://127.0.0.1:" in out
    assert "replies per backend" in out


async def test_run_serves_a_frames_listener_with_accept_proxy(tmp_path) -> None:
    path = tmp_path / "ferryman.yaml"
    text = config_text(["127.0.0.1:9"]).replace("mode: tcp", "mode: frames")
    path.write_text(text.replace("pool: game}", "pool: game, accept_proxy: true}"))
    p = await start_run(path)
    started = await p.event("proxy_started")
    host, port = started["listeners"]["front"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x00\x00\x01\x80")  # a frame where the PROXY header must come first
    failed = await p.event("conn_failed")
    assert failed["status"] == "proxy_protocol_error"
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()
    p.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await p.proc.wait() == 0
