"""replay.acks: which seq a connection may acknowledge, against a real durable store (sans-IO)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from replay.acks import AckTracker, CommitRounds
from replay.store import DurableStore, MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- CommitRounds --------------------------------------------------------------------------------


def test_a_round_is_durable_as_soon_as_its_commit_is() -> None:
    rounds = CommitRounds()
    assert (rounds.current, rounds.durable) == (1, 0)
    assert rounds.committed(commit_seq=0, durable_seq=0) == 1  # nothing written: trivially durable
    assert rounds.committed(commit_seq=1, durable_seq=1) == 2
    assert (rounds.current, rounds.durable) == (3, 2)


def test_rounds_wait_for_the_fsync_that_covers_their_commit() -> None:
    rounds = CommitRounds()
    assert rounds.committed(commit_seq=1, durable_seq=0) == 0
    assert rounds.committed(commit_seq=2, durable_seq=0) == 0
    assert rounds.committed(commit_seq=2, durable_seq=1) == 1  # round 1's commit is covered, not round 2's
    assert rounds.committed(commit_seq=3, durable_seq=2) == 3  # rounds 2 and 3 (same commit), not 4
    assert rounds.committed(commit_seq=4, durable_seq=4) == 5
    assert rounds.durable == 5


def test_rounds_follow_a_batch_mode_store(tmp_path: Path) -> None:
    clock = Clock()
    store = DurableStore(tmp_path, fsync="batch", batch_interval_s=1.0, clock=clock)
    rounds = CommitRounds()
    try:
        clock.now = 10.0
        store.apply_delta("s", "game", 1, {"n": 1}, [])
        assert rounds.committed(store.commit(), store.durable_seq) == 1  # the first commit syncs at once
        store.apply_delta("s", "game", 2, {"n": 2}, [])
        assert rounds.committed(store.commit(), store.durable_seq) == 1  # written, no fsync due yet
        assert store.durable_seq < store.statistics().commit_seq
        assert rounds.committed(store.commit(), store.durable_seq) == 1  # an idle tick: still not due
        clock.now = 11.5
        assert rounds.committed(store.commit(), store.durable_seq) == 4  # the fsync covers rounds 2-4
        assert store.durable_seq == store.statistics().commit_seq
    finally:
        store.close()


def test_a_commit_made_elsewhere_only_makes_writes_durable_sooner() -> None:
    store = MemoryStore(ttl_s=None)
    rounds = CommitRounds()
    store.apply_delta("s", "game", 1, {"n": 1}, [])
    store.commit()  # e.g. the admin API, between two ticks
    store.apply_delta("s", "game", 2, {"n": 2}, [])
    assert rounds.committed(store.commit(), store.durable_seq) == 1


# -- AckTracker ----------------------------------------------------------------------------------


def test_requests_without_deltas_are_covered_as_soon_as_they_are_answered() -> None:
    acks = AckTracker()
    assert acks.due(durable_round=0, answered=0) == 0
    assert acks.due(durable_round=0, answered=5) == 5
    assert acks.due(durable_round=0, answered=5) == 0  # nothing new: no ack
    assert acks.due(durable_round=1, answered=9) == 9
    assert acks.sent == 9


def test_deltas_hold_back_their_request_until_their_round_is_durable() -> None:
    acks = AckTracker()
    acks.wrote(1, 3)  # request 3's deltas, written in round 1
    acks.wrote(1, 4)  # same round: request 3 already holds it back
    assert acks.waiting_rounds == 1
    assert acks.due(durable_round=0, answered=6) == 2
    acks.wrote(2, 7)
    assert acks.due(durable_round=0, answered=8) == 0  # still 2: no ack
    assert acks.due(durable_round=1, answered=8) == 6  # round 1 durable: up to the request before 7
    assert acks.due(durable_round=2, answered=8) == 8
    assert acks.waiting_rounds == 0
    assert acks.due(durable_round=2, answered=8) == 0


def test_the_lowest_held_back_seq_of_a_round_counts() -> None:
    acks = AckTracker()
    acks.wrote(1, 5)
    acks.wrote(1, 4)  # a push delta before request 4's reply, written after request 5's reply
    assert acks.due(durable_round=0, answered=5) == 3


def test_acks_never_go_back_and_a_new_link_starts_at_its_first_seq() -> None:
    acks = AckTracker()
    assert acks.due(durable_round=0, answered=10) == 10
    acks.wrote(2, 4)  # an out-of-order hold below what was sent: nothing is taken back
    assert acks.due(durable_round=1, answered=12) == 0
    acks.rebase(next_seq=20)  # the session moved to a link that applies 20 and later
    assert acks.due(durable_round=2, answered=19) == 0
    assert acks.due(durable_round=2, answered=21) == 21


def test_prune_drops_only_durable_rounds() -> None:
    acks = AckTracker()
    acks.wrote(1, 1)
    acks.wrote(2, 2)
    acks.wrote(3, 3)
    acks.prune(2)
    assert acks.waiting_rounds == 1
    assert acks.due(durable_round=2, answered=5) == 2


# -- the whole rule against a real store -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fsync", ["batch", "always", "off"])
def test_no_ack_ever_claims_a_delta_that_is_not_durable(tmp_path: Path, seed: int, fsync: str) -> None:
    """A connection's replies (with or without deltas), pushes and ticks in random order, against a
    durable store whose batch fsync comes when its clock says so: every ack covers only deltas in
    commits at or below ``durable_seq``, never exceeds the answered seq, and rises."""
    rng = random.Random(seed)
    clock = Clock()
    store = DurableStore(tmp_path, fsync=fsync, batch_interval_s=1.0, clock=clock)
    rounds = CommitRounds()
    acks = AckTracker()
    version = 0
    answered = 0
    written: list[tuple[int, int]] = []  # (seq held back, round written in)
    commit_of_round: dict[int, int] = {}
    sent: list[int] = []
    try:
        for _ in range(400):
            r = rng.random()
            if r < 0.45:  # the reply to the next request, with deltas or not
                answered += 1
                if rng.random() < 0.5:
                    version += 1
                    store.apply_delta("s", "game", version, {"n": version}, [])
                    acks.wrote(rounds.current, answered)
                    written.append((answered, rounds.current))
            elif r < 0.55:  # a push with deltas: holds back the first request not answered yet
                version += 1
                store.apply_delta("s", "game", version, {"n": version}, [])
                acks.wrote(rounds.current, answered + 1)
                written.append((answered + 1, rounds.current))
            else:  # a tick: group commit, maybe an fsync, then the ack
                clock.now += rng.choice((0.1, 0.4, 1.0))
                closed = rounds.current
                commit_of_round[closed] = store.commit()
                durable_round = rounds.committed(commit_of_round[closed], store.durable_seq)
                seq = acks.due(durable_round, answered)
                if seq:
                    assert seq <= answered
                    assert not sent or seq > sent[-1]
                    sent.append(seq)
                for held, round_ in written:
                    if held <= acks.sent:
                        assert commit_of_round[round_] <= store.durable_seq, (held, round_)
        assert sent, "some acks were sent"
    finally:
        store.close()
