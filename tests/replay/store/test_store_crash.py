"""A real crash: a child process commits with fsync=always and is SIGKILLed at a random point; every
version it reported as committed must be back after reopening."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from replay.store import DurableStore

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMITS = 150

CHILD = textwrap.dedent(
    """
    import sys
    from replay.store import DurableStore

    store = DurableStore(sys.argv[1], fsync="always", segment_bytes=1024, snapshot_every_bytes=4096)
    print("ready", flush=True)
    for version in range(1, int(sys.argv[2]) + 1):
        store.apply_delta("sess", "game", version, {"n": version, "pad": "x" * 40}, [])
        store.set_partition_data("sess", "auth", {"last": version})
        store.commit()
        print(version, flush=True)  # reported only after commit() returned
    sys.stdin.read()  # wait to be killed
    """
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_keeps_every_reported_commit(tmp_path: Path, seed: int) -> None:
    kill_after = random.Random(seed).randint(1, COMMITS)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(COMMITS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        reported = 0
        while reported < kill_after:
            line = child.stdout.readline()
            assert line, "child exited early"
            reported = int(line)
        os.kill(child.pid, signal.SIGKILL)  # the child is still committing
        child.wait(timeout=10)
        # lines written before the kill were reported too
        for line in child.stdout.read().split():
            if line.isdigit():
                reported = int(line)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        assert child.stdin is not None
        child.stdin.close()
    assert child.returncode == -signal.SIGKILL

    store = DurableStore(tmp_path, fsync="always")
    game = store.get_partition_data("sess", "game")
    auth = store.get_partition_data("sess", "auth")
    assert game is not None and auth is not None
    assert reported <= game.version <= COMMITS
    # one commit held both writes: they come back together or not at all
    assert game.data == {"n": game.version, "pad": "x" * 40}
    assert auth.data == {"last": game.version}
    assert auth.version == game.version
    store.close()
