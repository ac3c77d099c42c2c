"""Provisioners with real processes and sockets on 127.0.0.1 (bounded counts, deadlines, no sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
import sys

import pytest

from proxy.scale.provisioners import (
    ProcessProvisioner,
    Provisioner,
    ProvisionError,
    StaticProvisioner,
    accepts,
    split_address,
)

# A tiny TCP server: listens on argv[1], writes its pid to argv[2], accepts and closes until killed.
SERVER = """
import os, socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(16)
open(sys.argv[2], "w").write(str(os.getpid()))
while True:
    conn, _ = sock.accept()
    conn.close()
"""


@pytest.fixture
def server_script(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "server.py"
    path.write_text(SERVER)
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); a reaped child does not.  The provisioner reaps what it stops.
    return True


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_process_provisioner_starts_real_servers_and_kills_them(
    server_script: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    prov = ProcessProvisioner(
        ["{python}", str(server_script), "{port}", str(tmp_path / "{name}.pid")],
        ready_timeout_s=20.0,
        log_dir=tmp_path / "logs",
    )
    assert isinstance(prov, Provisioner)
    try:
        a = await prov.start("a")
        b = await prov.start("b")
        assert a != b and prov.running() == {"a": a, "b": b}
        assert await accepts(a) and await accepts(b)
        assert await prov.ready("a")
        pid_a = int((tmp_path / "a.pid").read_text())
        assert pid_a == prov.pid("a")
        with pytest.raises(ProvisionError, match="already running"):
            await prov.start("a")
        await prov.stop("a")
        assert not alive(pid_a)
        assert not await accepts(a)
        assert not await prov.ready("a")
        assert prov.running() == {"b": b}
        await prov.stop("a")  # unknown now: a no-op
    finally:
        await prov.aclose()
    assert prov.running() == {}
    assert (tmp_path / "logs" / "a.log").exists()


async def test_process_provisioner_runs_the_demo_backend() -> None:
    prov = ProcessProvisioner(
        ["{python}", "-m", "proxy", "demo-backend", "--port", "{port}", "--name", "{name}"],
        ready_timeout_s=30.0,
    )
    try:
        address = await prov.start("demo-1")
        host, port = split_address(address)
        reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        del reader
    finally:
        await prov.aclose()
    assert not await accepts(address)


async def test_process_that_exits_before_listening_fails_the_start() -> None:
    prov = ProcessProvisioner(["{python}", "-c", "import sys; sys.exit(3)", "{port}"], ready_timeout_s=20.0)
    with pytest.raises(ProvisionError, match="exited with status 3"):
        await prov.start("x")
    assert prov.running() == {}


async def test_process_that_never_listens_is_killed_at_the_deadline(tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "pid"
    script = "import os, sys, time; open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(120)"
    prov = ProcessProvisioner(["{python}", "-c", script, "{port}", str(pid_file)], ready_timeout_s=0.5)
    with pytest.raises(ProvisionError, match="did not accept connections"):
        await prov.start("slow")
    assert prov.running() == {}
    if pid_file.exists():  # the child may be killed before it wrote anything
        assert not alive(int(pid_file.read_text()))


async def test_cancelled_start_leaves_no_process(server_script: pathlib.Path, tmp_path: pathlib.Path) -> None:
    script = "import time; time.sleep(120)"
    prov = ProcessProvisioner(["{python}", "-c", script, "{port}"], ready_timeout_s=60.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await prov.start("cancelled")
    assert prov.running() == {}


async def test_process_provisioner_uses_its_port_range(
    server_script: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    port = closed_port()
    prov = ProcessProvisioner(
        ["{python}", str(server_script), "{port}", str(tmp_path / "{name}.pid")],
        ports=[port],
        ready_timeout_s=20.0,
    )
    try:
        assert await prov.start("only") == f"127.0.0.1:{port}"
        with pytest.raises(ProvisionError, match="every port"):
            await prov.start("second")
    finally:
        await prov.aclose()


def test_process_command_template_is_checked() -> None:
    with pytest.raises(ValueError, match="port"):
        ProcessProvisioner(["server", "--name", "{name}"])
    prov = ProcessProvisioner(["{python}", "--port={port}", "{nope}"])
    with pytest.raises(ProvisionError, match="known fields"):
        prov.argv("a", 1)
    assert ProcessProvisioner(["{python}", "{host}:{port}", "{name}"]).argv("n", 9) == [
        sys.executable,
        "127.0.0.1:9",
        "n",
    ]


async def test_static_provisioner_hands_out_standby_servers_that_accept() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    live = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    dead = f"127.0.0.1:{closed_port()}"
    try:
        prov = StaticProvisioner([dead, live])
        assert isinstance(prov, Provisioner)
        assert await prov.start("a") == live  # the dead one is skipped
        assert await prov.ready("a")
        with pytest.raises(ProvisionError, match="no standby server accepts"):
            await prov.start("b")
        await prov.stop("a")
        assert prov.running() == {} and live in prov.standby
        unchecked = StaticProvisioner([dead], check_connect=False)
        assert await unchecked.start("c") == dead
        with pytest.raises(ProvisionError, match="exhausted"):
            await unchecked.start("d")
        await unchecked.aclose()
        assert unchecked.standby == [dead]
    finally:
        server.close()
        await server.wait_closed()


def test_static_provisioner_rejects_bad_addresses() -> None:
    with pytest.raises(ProvisionError, match="host:port"):
        StaticProvisioner(["localhost"])
    assert split_address("[::1]:80") == ("::1", 80)
