"""Stateful property test: any sequence of writes, commits, expiries, clean reopens and crashes leaves the
store equal to a plain-dict model (committed state only, after a crash)."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from replay.canonical import canonical_packb
from replay.store import DurableStore, InvalidData, MemoryStore, StaleVersion, VersionGap

TTL_S = 10.0
SIDS = st.sampled_from(["s1", "s2", "s3", "s4"])
PARTS = st.sampled_from(["auth", "game", "cart"])
KEYS = st.sampled_from(["a", "b", "c", 1, 2, b"k"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=5) | st.binary(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=2), c, max_size=3),
    max_leaves=6,
)
TIMES = st.integers(0, 60).map(float)

# Model: sid -> {"last": float | None, "parts": {name: [version, data]}}
Model = dict[str, dict[str, Any]]


class StoreMachine(RuleBasedStateMachine):
    durable = True

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ferryman-store-model-"))
        self.store = self.open()
        self.model: Model = {}
        self.committed: Model = {}
        self.clock_s: float | None = None

    def open(self) -> MemoryStore:
        if not self.durable:
            return MemoryStore(ttl_s=TTL_S)
        # Small segments and snapshots so that rolls and compaction happen within a few steps.
        return DurableStore(self.dir, fsync="off", ttl_s=TTL_S, segment_bytes=100, snapshot_every_bytes=250)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- model helpers ---------------------------------------------------------------------------

    def _version(self, sid: str, part: str) -> int:
        entry = self.model.get(sid)
        if entry is None or part not in entry["parts"]:
            return 0
        return int(entry["parts"][part][0])

    def _ensure(self, sid: str) -> dict[str, Any]:
        if sid not in self.model:
            self.model[sid] = {"last": self.clock_s, "parts": {}}
        return self.model[sid]

    def _advance(self, now_s: float) -> None:
        if self.clock_s is None or now_s > self.clock_s:
            self.clock_s = now_s

    # --- rules -----------------------------------------------------------------------------------

    @rule(sid=SIDS, part=PARTS, data=st.dictionaries(KEYS, VALUES, max_size=4))
    def set_data(self, sid: str, part: str, data: dict[Any, Any]) -> None:
        version = self.store.set_partition_data(sid, part, data)
        assert version == self._version(sid, part) + 1
        self._ensure(sid)["parts"][part] = [version, copy.deepcopy(data)]

    @rule(
        sid=SIDS,
        part=PARTS,
        set_=st.dictionaries(KEYS, VALUES, max_size=3),
        delete=st.lists(KEYS, max_size=2),
        skew=st.sampled_from([0, 0, 0, 0, -1, 1, 2]),
    )
    def delta(self, sid: str, part: str, set_: dict[Any, Any], delete: list[Any], skew: int) -> None:
        current = self._version(sid, part)
        version = current + 1 + skew
        overlap = bool(set(delete) & set(set_))
        if skew < 0 or version <= current:
            with pytest.raises(StaleVersion):
                self.store.apply_delta(sid, part, version, set_, delete)
            return
        if skew > 0:
            with pytest.raises(VersionGap):
                self.store.apply_delta(sid, part, version, set_, delete)
            return
        if overlap:
            with pytest.raises(InvalidData):
                self.store.apply_delta(sid, part, version, set_, delete)
            return
        assert self.store.apply_delta(sid, part, version, set_, delete) == version
        entry = self._ensure(sid)
        data = entry["parts"].get(part, [0, {}])[1]
        for key in delete:
            data.pop(key, None)
        data.update(copy.deepcopy(set_))
        entry["parts"][part] = [version, data]

    @rule(sid=SIDS)
    def delete_session(self, sid: str) -> None:
        self.store.delete_session(sid)
        self.model.pop(sid, None)

    @rule(sid=SIDS, now_s=TIMES)
    def touch(self, sid: str, now_s: float) -> None:
        self.store.touch(sid, now_s)
        self._advance(now_s)
        entry = self.model.get(sid)
        if entry is not None and (entry["last"] is None or now_s > entry["last"]):
            entry["last"] = now_s

    @rule(now_s=TIMES)
    def expire(self, now_s: float) -> None:
        got = self.store.expire(now_s)
        self._advance(now_s)
        expected = []
        for sid, entry in list(self.model.items()):
            if entry["last"] is None:
                entry["last"] = now_s
            if now_s - entry["last"] > TTL_S:
                expected.append(sid)
                del self.model[sid]
        assert sorted(got) == sorted(expected)

    @rule()
    def commit(self) -> None:
        self.store.commit()
        self.committed = copy.deepcopy(self.model)

    @precondition(lambda self: self.durable)
    @rule()
    def reopen_cleanly(self) -> None:
        self.store.close()
        self.store = self.open()
        self.committed = copy.deepcopy(self.model)
        self.clock_s = None  # the latest-time-seen is process memory

    @precondition(lambda self: self.durable)
    @rule()
    def crash_and_reopen(self) -> None:
        # No close(): pending writes are lost.  The store holds no reference cycles, so dropping the
        # last reference closes its descriptors at once, as process exit would.
        del self.store
        self.store = self.open()
        self.model = copy.deepcopy(self.committed)
        self.clock_s = None

    # --- the model must match ----------------------------------------------------------------------

    @invariant()
    def store_equals_model(self) -> None:
        assert sorted(self.store.sessions()) == sorted(self.model)
        for sid, entry in self.model.items():
            assert self.store.last_active_s(sid) == entry["last"]
            assert self.store.get_partition_list(sid) == sorted(entry["parts"])
            for part, (version, data) in entry["parts"].items():
                state = self.store.get_partition_data(sid, part)
                assert state is not None
                assert (state.version, state.data) == (version, data)
        stats = self.store.statistics()
        assert stats.sessions == len(self.model)
        assert stats.data_bytes == sum(
            len(canonical_packb(data)) for entry in self.model.values() for _, data in entry["parts"].values()
        )


class MemoryStoreMachine(StoreMachine):
    durable = False


DURABLE_SETTINGS = settings(max_examples=25, stateful_step_count=40, deadline=None)

TestDurableStoreModel = StoreMachine.TestCase
TestDurableStoreModel.settings = DURABLE_SETTINGS
TestMemoryStoreModel = MemoryStoreMachine.TestCase
TestMemoryStoreModel.settings = settings(max_examples=20, stateful_step_count=40, deadline=None)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
