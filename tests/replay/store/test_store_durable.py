"""DurableStore: recovery after crashes, torn and corrupt records, segments and snapshots, fsync modes."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from replay.store import (
    DurableStore,
    PartitionState,
    StoreClosed,
    StoreCorrupted,
    StoreIOError,
    StoreLocked,
)
from replay.store.records import FILE_HEADER_BYTES, RECORD_HEADER_BYTES

# Dropping a store without close() is how these tests crash it; its files are closed by the finalizer.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def dump(store: DurableStore) -> dict[str, Any]:
    """Everything a user can observe, as plain data."""
    out: dict[str, Any] = {}
    for sid in sorted(store.sessions()):
        parts = {}
        for name in store.get_partition_list(sid):
            state = store.get_partition_data(sid, name)
            assert state is not None
            parts[name] = (state.version, state.data)
        out[sid] = (store.last_active_s(sid), parts)
    return out


def collect() -> None:
    """After ``del store``: finalize the dropped object (its descriptors close, as at process exit).

    That is a crash as far as the files can tell: no close(), no final commit, no fsync.
    """
    gc.collect()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.log"))


def three_commits(directory: Path, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Write three commits, close, and return (state after 2 commits, after 3, offset of the 3rd record)."""
    store = DurableStore(directory, fsync="off", **kwargs)
    store.touch("s1", 10.0)
    store.set_partition_data("s1", "auth", {"user": "ann"})
    store.commit()
    store.apply_delta("s1", "game", 1, {"hp": 10, "inv": ["sword"]}, [])
    store.commit()
    after_two = dump(store)
    offset = segments(directory)[-1].stat().st_size
    store.apply_delta("s1", "game", 2, {"hp": 9, "blob": b"\x00\xff" * 8}, ["inv"])
    store.touch("s1", 11.0)
    store.commit()
    after_three = dump(store)
    store.close()
    return after_two, after_three, offset


def test_reopen_after_close_restores_everything(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="always")
    store.touch("s1", 5.0)
    store.set_partition_data("s1", "auth", {"user": "ann"})
    store.apply_delta("s2", "cart", 1, {"items": [1, 2]}, [])
    store.commit()
    store.apply_delta("s2", "cart", 2, {"items": [1, 2, 3]}, [])  # pending: close() commits it
    before = dump(store)
    store.close()
    again = DurableStore(tmp_path, fsync="always")
    assert dump(again) == before
    assert again.commit_seq == 2
    assert again.apply_delta("s2", "cart", 3, {}, []) == 3
    assert again.commit() == 3
    again.close()


def test_crash_keeps_every_committed_version_and_drops_the_rest(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="always")
    versions = []
    for i in range(1, 21):
        store.apply_delta("s1", "game", i, {"n": i}, [])
        if i % 4 == 0:
            store.commit()
            versions.append(i)
    committed = dump(store)
    store.apply_delta("s1", "game", 21, {"n": 21}, [])  # never committed
    store.set_partition_data("s2", "auth", {})
    del store  # crash
    collect()
    again = DurableStore(tmp_path, fsync="always")
    assert dump(again) == committed
    state = again.get_partition_data("s1", "game")
    assert state == PartitionState(versions[-1], {"n": versions[-1]})
    assert again.recovery.commits_replayed == 5
    again.close()


@pytest.mark.parametrize("fsync", ["always", "batch", "off"])
def test_copy_of_the_directory_taken_mid_way_opens_at_the_last_commit(tmp_path: Path, fsync: str) -> None:
    live = tmp_path / "live"
    store = DurableStore(live, fsync=fsync, segment_bytes=300)
    snapshots = []
    for i in range(1, 31):
        store.apply_delta(f"s{(i - 1) % 3}", "game", (i - 1) // 3 + 1, {"i": i}, [])
        store.commit()
        store.touch("s0", float(i))  # uncommitted at the time of the copy
        copy = tmp_path / f"copy{i}"
        shutil.copytree(live, copy)
        snapshots.append((copy, store.commit_seq))
    expected_final = dump(store)
    store.close()
    for copy, seq in snapshots[::7]:
        reopened = DurableStore(copy, fsync=fsync)
        assert reopened.commit_seq == seq
        reopened.close()
    last = DurableStore(snapshots[-1][0], fsync=fsync)
    # the copy lacks only the final touch, written after the last commit (close() committed it)
    assert {k: v[1] for k, v in dump(last).items()} == {k: v[1] for k, v in expected_final.items()}
    last.close()


def test_torn_tail_at_every_byte_of_the_final_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    after_two, after_three, offset = three_commits(src)
    seg = segments(src)[-1]
    full = seg.read_bytes()
    assert len(full) > offset + RECORD_HEADER_BYTES
    for cut in range(offset, len(full)):
        work = tmp_path / f"cut{cut}"
        work.mkdir()
        (work / seg.name).write_bytes(full[:cut])
        store = DurableStore(work, fsync="off")
        assert dump(store) == after_two, cut
        assert store.recovery.truncated_bytes == cut - offset
        assert (store.recovery.truncated_segment is None) == (cut == offset)
        assert (work / seg.name).stat().st_size == offset
        # the log continues cleanly after the cut
        store.apply_delta("s1", "game", 2, {"again": True}, [])
        store.commit()
        store.close()
        reopened = DurableStore(work, fsync="off")
        state = reopened.get_partition_data("s1", "game")
        assert state == PartitionState(2, {"hp": 10, "inv": ["sword"], "again": True})
        reopened.close()
        shutil.rmtree(work)
    whole = DurableStore(src, fsync="off")
    assert dump(whole) == after_three
    whole.close()


def test_flipped_bit_in_the_tail_record_is_caught_by_the_checksum(tmp_path: Path) -> None:
    src = tmp_path / "src"
    after_two, _, offset = three_commits(src)
    seg = segments(src)[-1]
    full = seg.read_bytes()
    for pos in range(offset, len(full)):
        damaged = bytearray(full)
        damaged[pos] ^= 1 << (pos % 8)
        work = tmp_path / "work"
        work.mkdir()
        (work / seg.name).write_bytes(bytes(damaged))
        store = DurableStore(work, fsync="off")
        assert dump(store) == after_two, pos
        assert store.recovery.damage is not None
        store.close()
        shutil.rmtree(work)


def test_damage_in_an_older_segment_is_a_hard_error(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="off", segment_bytes=200)
    for i in range(1, 20):
        store.apply_delta("s1", "game", i, {"n": i, "pad": "x" * 20}, [])
        store.commit()
    store.close()
    segs = segments(tmp_path)
    assert len(segs) >= 3
    victim = segs[1]
    data = bytearray(victim.read_bytes())
    data[FILE_HEADER_BYTES + RECORD_HEADER_BYTES + 3] ^= 0x40
    victim.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupted, match=r"not the last segment") as info:
        DurableStore(tmp_path, fsync="off")
    assert victim.name in str(info.value)
    assert f"offset {FILE_HEADER_BYTES}" in str(info.value)


def test_a_missing_segment_is_a_hard_error(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="off", segment_bytes=200)
    for i in range(1, 20):
        store.apply_delta("s1", "game", i, {"n": i, "pad": "x" * 20}, [])
        store.commit()
    store.close()
    segments(tmp_path)[1].unlink()
    with pytest.raises(StoreCorrupted, match="previous segment ends"):
        DurableStore(tmp_path, fsync="off")
    segments(tmp_path)[0].unlink()
    with pytest.raises(StoreCorrupted, match="in no snapshot"):
        DurableStore(tmp_path, fsync="off")


def test_a_segment_torn_while_being_created_is_removed(tmp_path: Path) -> None:
    _, after_three, _ = three_commits(tmp_path)
    (tmp_path / "seg-00000000000000000004.log").write_bytes(b"FRYMNLOG\x00\x00")
    store = DurableStore(tmp_path, fsync="off")
    assert dump(store) == after_three
    assert "seg-00000000000000000004.log" in store.recovery.removed_files
    store.apply_delta("s1", "game", 3, {}, [])
    assert store.commit() == 4
    store.close()
    assert DurableStore(tmp_path, fsync="off").get_partition_data("s1", "game").version == 3  # type: ignore[union-attr]


def test_segments_roll_at_the_configured_size(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="off", segment_bytes=256)
    for i in range(1, 41):
        store.apply_delta("s1", "game", i, {"n": i, "pad": "y" * 30}, [])
        store.commit()
    before = dump(store)
    store.close()
    segs = segments(tmp_path)
    assert len(segs) > 5
    assert all(p.stat().st_size < 256 + 100 for p in segs)
    again = DurableStore(tmp_path, fsync="off")
    assert dump(again) == before
    assert again.recovery.segments_replayed == len(segs)
    again.close()


def test_snapshot_compacts_the_log_and_keeps_the_data(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="always", segment_bytes=512, snapshot_every_bytes=2048)
    store.touch("s0", 1.0)
    for i in range(1, 101):
        sid = f"s{i % 7}"
        current = store.get_partition_data(sid, "game")
        store.apply_delta(sid, "game", (current.version if current else 0) + 1, {"n": i, "pad": "z" * 20}, [])
        if i % 10 == 0:
            store.delete_session(sid)
            store.set_partition_data(sid, "auth", {"fresh": i})
        store.commit()
    before = dump(store)
    stats = store.statistics()
    assert stats.snapshots_total >= 3
    del store  # crash
    collect()
    snaps = list(tmp_path.glob("snap-*.snap"))
    assert len(snaps) == 1  # older snapshots are deleted
    assert len(segments(tmp_path)) <= 5  # segments folded into a snapshot are deleted
    again = DurableStore(tmp_path, fsync="always", segment_bytes=512, snapshot_every_bytes=2048)
    assert again.recovery.snapshot_seq > 0
    assert dump(again) == before
    again.close()


def test_crash_between_snapshot_and_segment_deletion(tmp_path: Path) -> None:
    live = tmp_path / "live"
    store = DurableStore(live, fsync="off", segment_bytes=300, snapshot_every_bytes=10**9)
    for i in range(1, 30):
        store.apply_delta("s1", "game", i, {"n": i}, [])
        store.commit()
    old_log = tmp_path / "old"
    shutil.copytree(live, old_log)
    store.snapshot_every_bytes = 1  # the next commit writes a snapshot
    store.apply_delta("s1", "game", 30, {"n": 30}, [])
    store.commit()
    assert segments(live) == []
    before = dump(store)
    store.close()
    for seg in segments(old_log):  # as if the deletions never happened
        shutil.copy(seg, live)
    again = DurableStore(live, fsync="off")
    assert dump(again) == before
    assert segments(live) == []  # recovery finished the clean-up
    again.apply_delta("s1", "game", 31, {}, [])
    again.close()
    assert DurableStore(live, fsync="off").get_partition_data("s1", "game").version == 31  # type: ignore[union-attr]


def test_damaged_snapshot(tmp_path: Path) -> None:
    live = tmp_path / "live"
    store = DurableStore(live, fsync="off", snapshot_every_bytes=10**9)
    for i in range(1, 11):
        store.apply_delta("s1", "game", i, {"n": i}, [])
        store.commit()
    old_log = tmp_path / "old"
    shutil.copytree(live, old_log)
    store.snapshot_every_bytes = 1
    store.apply_delta("s1", "game", 11, {"n": 11}, [])
    store.commit()
    store.close()
    (snap,) = live.glob("snap-*.snap")
    data = bytearray(snap.read_bytes())
    data[-5] ^= 1
    snap.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupted, match="no usable snapshot"):
        DurableStore(live, fsync="off")
    # with the full log still there, the log alone rebuilds the state
    for seg in segments(old_log):
        shutil.copy(seg, live)
    again = DurableStore(live, fsync="off")
    assert again.get_partition_data("s1", "game") == PartitionState(10, {"n": 10})
    assert any(name.endswith(".snap") for name in again.recovery.removed_files)
    again.close()


def test_leftover_temp_snapshot_is_ignored_and_removed(tmp_path: Path) -> None:
    _, after_three, _ = three_commits(tmp_path)
    (tmp_path / "snap-00000000000000000009.snap.tmp").write_bytes(b"partial")
    store = DurableStore(tmp_path, fsync="off")
    assert dump(store) == after_three
    assert list(tmp_path.glob("*.tmp")) == []
    store.close()


def test_expired_and_deleted_sessions_stay_gone_after_recovery(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="off", ttl_s=10.0)
    store.touch("x", 0.0)
    for sid in ("a", "b", "c"):
        store.set_partition_data(sid, "game", {"sid": sid})
    store.touch("b", 8.0)
    store.touch("c", 9.0)
    store.commit()
    assert store.expire(10.5) == ["a"]
    store.delete_session("c")
    store.commit()
    del store  # crash
    collect()
    again = DurableStore(tmp_path, fsync="off", ttl_s=10.0)
    assert list(again.sessions()) == ["b"]
    assert again.last_active_s("b") == 8.0
    assert again.expire(18.5) == ["b"]
    again.close()


def test_a_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    with pytest.raises(StoreLocked):
        DurableStore(tmp_path)
    store.close()
    DurableStore(tmp_path).close()


# --- fsync modes ---------------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_fsync_always_syncs_every_commit(tmp_path: Path, fsyncs: list[int]) -> None:
    store = DurableStore(tmp_path, fsync="always")
    assert fsyncs == []
    store.set_partition_data("s1", "game", {})
    assert store.commit() == 1
    assert len(fsyncs) == 3  # new segment file + its directory entry + the commit
    assert store.durable_seq == 1
    for i in range(2, 7):
        store.apply_delta("s1", "game", i, {"i": i}, [])
        store.commit()
        assert store.durable_seq == i
    assert len(fsyncs) == 3 + 5
    store.commit()  # nothing to write, nothing to sync
    assert len(fsyncs) == 8
    store.close()
    assert len(fsyncs) == 8


def test_fsync_off_never_syncs(tmp_path: Path, fsyncs: list[int]) -> None:
    store = DurableStore(tmp_path, fsync="off", segment_bytes=200, snapshot_every_bytes=1000)
    for i in range(1, 40):
        store.apply_delta("s1", "game", i, {"i": i, "pad": "p" * 20}, [])
        assert store.commit() == i
        assert store.durable_seq == i  # survives a killed process: the bytes are in the kernel
    assert store.statistics().snapshots_total > 0
    store.close()
    assert fsyncs == []


def test_fsync_batch_syncs_by_time_and_size_and_on_close(tmp_path: Path, fsyncs: list[int]) -> None:
    now = [1000.0]
    store = DurableStore(
        tmp_path, fsync="batch", batch_interval_s=0.05, batch_bytes=400, clock=lambda: now[0]
    )
    store.set_partition_data("s1", "game", {})
    store.commit()  # first commit: nothing synced for ages, so it syncs
    assert (len(fsyncs), store.durable_seq) == (3, 1)
    for i in range(2, 5):
        now[0] += 0.01
        store.apply_delta("s1", "game", i, {"i": i}, [])
        store.commit()
    assert (len(fsyncs), store.durable_seq) == (3, 1)  # within the interval: deferred
    now[0] += 0.03  # 0.06 s since the last sync
    store.commit()  # an idle tick's commit performs the due sync
    assert (len(fsyncs), store.durable_seq) == (4, 4)
    store.apply_delta("s1", "game", 5, {"big": "b" * 500}, [])
    store.commit()  # past batch_bytes: syncs without waiting
    assert (len(fsyncs), store.durable_seq) == (5, 5)
    store.apply_delta("s1", "game", 6, {}, [])
    store.commit()
    assert store.durable_seq == 5
    assert store.sync() == 6
    assert len(fsyncs) == 6
    store.apply_delta("s1", "game", 7, {}, [])
    store.close()
    assert len(fsyncs) == 7


def test_fsync_batch_syncs_a_segment_before_closing_it(tmp_path: Path, fsyncs: list[int]) -> None:
    store = DurableStore(tmp_path, fsync="batch", batch_interval_s=3600, segment_bytes=150, clock=lambda: 0.0)
    store.apply_delta("s1", "game", 1, {"pad": "q" * 40}, [])
    store.commit()
    synced = len(fsyncs)
    store.apply_delta("s1", "game", 2, {"pad": "q" * 80}, [])
    store.commit()  # fills the segment: it is synced before being closed
    assert len(fsyncs) == synced + 1
    assert store.durable_seq == 2
    store.close()


# --- I/O errors ----------------------------------------------------------------------------------


class _FailingFile:
    def __init__(self, real: Any, fail_after_bytes: int) -> None:
        self.real = real
        self.name = real.name
        self.budget = fail_after_bytes

    def write(self, data: Any) -> int:
        if self.budget <= 0:
            raise OSError(28, "No space left on device")
        n = self.real.write(bytes(data)[: self.budget])
        self.budget -= n
        return n

    def fileno(self) -> int:
        return self.real.fileno()

    def seek(self, offset: int) -> int:
        return self.real.seek(offset)

    def close(self) -> None:
        self.real.close()


def test_failed_write_is_cut_off_and_retried_by_the_next_commit(tmp_path: Path) -> None:
    store = DurableStore(tmp_path, fsync="always")
    store.apply_delta("s1", "game", 1, {"n": 1}, [])
    store.commit()
    seg = segments(tmp_path)[0]
    size = seg.stat().st_size
    real = store._segment
    store._segment = _FailingFile(real, fail_after_bytes=7)  # type: ignore[assignment]
    store.apply_delta("s1", "game", 2, {"n": 2}, [])
    with pytest.raises(StoreIOError, match="No space"):
        store.commit()
    assert seg.stat().st_size == size  # the partial record is gone
    assert store.commit_seq == 1
    store._segment = real
    assert store.commit() == 2
    store.close()
    assert DurableStore(tmp_path).get_partition_data("s1", "game") == PartitionState(2, {"n": 2})


def test_failed_fsync_makes_the_store_unusable_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DurableStore(tmp_path, fsync="always")
    store.apply_delta("s1", "game", 1, {"n": 1}, [])
    store.commit()

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    store.apply_delta("s1", "game", 2, {"n": 2}, [])
    with pytest.raises(StoreIOError):
        store.commit()
    assert store.durable_seq == 1
    with pytest.raises(StoreClosed, match="reopen"):
        store.get_partition_data("s1", "game")
    monkeypatch.undo()
    store.close()  # releases the directory without writing
    again = DurableStore(tmp_path)
    assert again.get_partition_data("s1", "game") in (
        PartitionState(1, {"n": 1}),
        PartitionState(2, {"n": 2}),
    )
    again.close()
