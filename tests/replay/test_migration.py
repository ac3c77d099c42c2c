"""Sans-IO tests of the migration machine: every row of the rollback matrix, no sockets."""

from __future__ import annotations

import msgpack
import pytest

from replay.canonical import canonical_packb, digest
from replay.envelope import (
    RESTORE_DELTAS,
    Attach,
    Attached,
    Delta,
    Error,
    Fence,
    Fenced,
    Push,
    Release,
    Req,
    Res,
    Restore,
    Restored,
    RestoreDelta,
)
from replay.migration import (
    ClientGone,
    CloseSource,
    CloseTarget,
    Commit,
    ConnectTarget,
    DeliverToClient,
    Finished,
    FromSource,
    FromTarget,
    Migration,
    PauseClient,
    Phase,
    PhaseTimeout,
    ResumeClient,
    SendSource,
    SendTarget,
    SourceFailed,
    TargetConnected,
    TargetFailed,
    UnknownOutcome,
    restore_delta,
)
from replay.store import MemoryStore, PartitionState

SID = "sess-1"


def store_with_state() -> MemoryStore:
    s = MemoryStore(ttl_s=None)
    s.set_partition_data(SID, "auth", {"user": "ann"})
    s.set_partition_data(SID, "game", {"score": 3})
    s.set_partition_data(SID, "cart", {"items": ["apple"]})
    return s


def make(store=None, inflight=None, idempotent=lambda body: False) -> Migration:
    return Migration(
        sid=SID,
        epoch=4,
        source="s1",
        target="s2",
        source_requires=("auth", "game", "cart"),
        target_requires=("auth", "game"),
        store=store or store_with_state(),
        inflight={} if inflight is None else inflight,
        next_seq=11,
        now_s=100.0,
        idempotent=idempotent,
    )


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def digests(store, names):
    return {n: digest(store.get_partition_data(SID, n).data) for n in names}


def to_fencing(m: Migration, features: tuple[str, ...] = ()) -> list:
    assert m.start() == [ConnectTarget("s2")]
    [send] = m.handle(TargetConnected(), 100.0)
    attach = send.envelope
    assert isinstance(attach, Attach) and attach.epoch == 5 and attach.next_seq == 11
    # Selective pre-copy: requires(target) ∩ present, never the cart.
    assert set(attach.state) == {"auth", "game"}
    attached = Attached(sid=SID, epoch=5, digests=digests(m.store, ["auth", "game"]), features=features)
    actions = m.handle(FromTarget(attached), 100.01)
    assert actions == [PauseClient(), SendSource(Fence(epoch=5))]
    assert m.phase is Phase.FENCING
    return actions


def finished(actions) -> Finished:
    [f] = of(actions, Finished)
    return f


def test_happy_path_replays_only_what_changed_and_resends_unapplied() -> None:
    inflight = {9: b"req9", 10: b"req10"}
    m = make(inflight=inflight)
    to_fencing(m)
    # Req 9 is answered during the quiesce, with a delta; req 10 was never applied by the source.
    out = m.handle(FromSource(Res(seq=9, body=b"reply9", deltas={"game": Delta(version=2, set_={"score": 4})})), 100.02)
    assert out == [DeliverToClient(b"reply9")]
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=9, deltas={})), 100.03)
    [restore] = of(out, SendTarget)
    assert isinstance(restore.envelope, Restore)
    assert set(restore.envelope.state) == {"game"}  # only the partition that moved since the pre-copy
    assert restore.envelope.state["game"].data == {"score": 4}
    out = m.handle(FromTarget(Restored(epoch=5, digests=digests(m.store, ["auth", "game"]))), 100.04)
    assert out[0] == Commit("s2", 5, 10)
    assert of(out, SendTarget) == [SendTarget(Req(seq=10, body=b"req10"))]
    assert ResumeClient() in out and SendSource(Release(epoch=5)) in out and CloseSource() in out
    f = finished(out)
    assert f.outcome == "committed" and m.phase is Phase.COMMITTED
    assert f.report.pause_s == pytest.approx(0.03)
    assert f.report.partitions_present == 3 and f.report.partitions_replayed == 2
    assert set(f.report.precopy_bytes) == {"auth", "game"} and set(f.report.replay_bytes) == {"game"}
    assert inflight == {10: b"req10"}  # still in flight, now on the target


def test_nothing_changed_commits_without_restore() -> None:
    m = make()
    to_fencing(m)
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={})), 101.0)
    assert out[0] == Commit("s2", 5, 11) and not of(out, SendTarget)


def test_requests_the_source_applied_after_the_precopy_move_the_targets_next_seq() -> None:
    inflight: dict[int, bytes] = {}
    m = make(inflight=inflight)
    to_fencing(m)  # the pre-copy attach said next_seq 11
    inflight.update({11: b"a", 12: b"b"})  # forwarded to the source while the target was attaching
    assert m.handle(FromSource(Res(seq=11, body=b"ra")), 100.02) == [DeliverToClient(b"ra")]
    assert m.handle(FromSource(Res(seq=12, body=b"rb")), 100.02) == [DeliverToClient(b"rb")]
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=12, deltas={})), 100.03)
    assert out[0] == Commit("s2", 5, 13)  # the shell re-attaches the target at 13


def test_a_rolled_back_source_is_reattached_after_its_last_applied_seq() -> None:
    inflight = {11: b"a", 12: b"b"}
    m = make(inflight=inflight)
    to_fencing(m)
    m.handle(FromSource(Res(seq=11, body=b"ra")), 100.02)
    m.handle(TargetFailed("reset"), 100.025)
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=11, deltas={})), 100.03)
    [reattach, resend] = of(out, SendSource)
    assert reattach.envelope.epoch == 6 and reattach.envelope.next_seq == 12
    assert resend == SendSource(Req(seq=12, body=b"b"))
    assert finished(out).outcome == "rolled_back"


def test_every_attach_carries_the_connection_s_ack_request_and_client_address() -> None:
    m = Migration(
        sid=SID, epoch=4, source="s1", target="s2", source_requires=("auth",), target_requires=("auth",),
        store=store_with_state(), inflight={11: b"a"}, next_seq=11, now_s=100.0,
        requires_ack=True, client=("203.0.113.7", 40000),
    )  # fmt: skip
    m.start()
    [precopy] = m.handle(TargetConnected(), 100.0)
    m.handle(FromTarget(Attached(sid=SID, epoch=5, digests=digests(m.store, ["auth"]))), 100.01)
    m.handle(TargetFailed("reset"), 100.02)
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={})), 100.03)
    reattach = of(out, SendSource)[0].envelope
    for attach in (precopy.envelope, reattach):
        assert isinstance(attach, Attach)
        assert attach.requires_ack is True and attach.client == ("203.0.113.7", 40000)
    default = make()._attach(("auth",), 5, precopy=False)
    assert default.requires_ack is False and default.client is None


def test_final_deltas_from_fenced_are_applied_and_replayed() -> None:
    m = make()
    to_fencing(m)
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={"auth": Delta(version=2, set_={"role": "admin"})})), 1.0)
    [restore] = of(out, SendTarget)
    assert restore.envelope.state["auth"].data == {"user": "ann", "role": "admin"}
    assert m.store.get_partition_data(SID, "auth").version == 2


@pytest.mark.parametrize("phase_events", [0, 1])
def test_target_fails_before_fence_rolls_back_without_pausing(phase_events: int) -> None:
    m = make()
    m.start()
    if phase_events:
        m.handle(TargetConnected(), 1.0)
    out = m.handle(TargetFailed("connection refused"), 2.0)
    assert CloseTarget() in out and not of(out, ResumeClient) and not of(out, SendSource)
    assert finished(out).outcome == "rolled_back" and "connection refused" in finished(out).cause


def test_digest_mismatch_after_precopy_rolls_back() -> None:
    m = make()
    m.start()
    m.handle(TargetConnected(), 1.0)
    out = m.handle(FromTarget(Attached(sid=SID, epoch=5, digests={"auth": 1, "game": 2})), 1.1)
    assert finished(out).cause == "digest mismatch after pre-copy" and CloseTarget() in out


def test_digest_mismatch_after_replay_rolls_back_to_a_reattached_source() -> None:
    inflight = {10: b"req10"}
    m = make(inflight=inflight)
    to_fencing(m)
    m.handle(FromSource(Fenced(epoch=5, last_seq=9, deltas={"game": Delta(version=2, set_={"score": 9})})), 2.0)
    out = m.handle(FromTarget(Restored(epoch=5, digests={"auth": 0, "game": 0})), 2.1)
    sent = [a.envelope for a in of(out, SendSource)]
    assert isinstance(sent[0], Attach) and sent[0].epoch == 6 and set(sent[0].state) == {"auth", "game", "cart"}
    assert sent[1:] == [Req(seq=10, body=b"req10")]  # the source gets back what it never applied
    assert ResumeClient() in out and finished(out).outcome == "rolled_back"
    assert finished(out).report.pause_s == pytest.approx(2.1 - 100.01)


def test_target_fails_while_fence_outstanding_waits_for_fenced_then_rolls_back() -> None:
    inflight = {10: b"req10", 11: b"req11"}
    m = make(inflight=inflight)
    to_fencing(m)
    out = m.handle(TargetFailed("reset"), 3.0)
    assert out == [CloseTarget()] and m.phase is Phase.FENCING
    assert m.handle(TargetFailed("again"), 3.01) == []
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={})), 3.1)
    sent = [a.envelope for a in of(out, SendSource)]
    assert isinstance(sent[0], Attach) and sent[0].epoch == 6
    assert sent[1:] == [Req(seq=11, body=b"req11")]
    assert finished(out).outcome == "rolled_back" and "reset" in finished(out).cause


def test_target_error_envelope_rolls_back() -> None:
    m = make()
    to_fencing(m)
    m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={"game": Delta(version=2, set_={"x": 1})})), 4.0)
    out = m.handle(FromTarget(Error(code="stale_epoch", message="old")), 4.1)
    assert finished(out).outcome == "rolled_back" and "stale_epoch" in finished(out).cause


@pytest.mark.parametrize("when", ["connecting", "attaching", "fencing", "restoring"])
def test_source_dies_at_each_phase_rebuilds_on_target_with_unknown_outcomes(when: str) -> None:
    inflight = {10: b"incr", 11: b"get"}
    m = make(inflight=inflight, idempotent=lambda body: body == b"get")
    m.start()
    out: list = []
    if when == "connecting":
        out = m.handle(SourceFailed("reset"), 1.0)
        assert out == []
        m.handle(TargetConnected(), 1.1)
        out = m.handle(FromTarget(Attached(sid=SID, epoch=5, digests=digests(m.store, ["auth", "game"]))), 1.2)
    elif when == "attaching":
        m.handle(TargetConnected(), 1.1)
        assert m.handle(SourceFailed("reset"), 1.15) == []
        out = m.handle(FromTarget(Attached(sid=SID, epoch=5, digests=digests(m.store, ["auth", "game"]))), 1.2)
    elif when == "fencing":
        to_fencing(m)
        out = m.handle(SourceFailed("reset"), 1.2)
    else:
        to_fencing(m)
        m.handle(FromSource(Fenced(epoch=5, last_seq=9, deltas={"game": Delta(version=2, set_={"s": 1})})), 1.1)
        assert m.phase is Phase.RESTORING
        out = m.handle(SourceFailed("reset"), 1.2)
        assert out == []  # already fenced; the restore in flight finishes the job
        out = m.handle(FromTarget(Restored(epoch=5, digests=digests(m.store, ["auth", "game"]))), 1.3)
        assert of(out, Commit) and finished(out).outcome == "committed"
        return
    assert of(out, UnknownOutcome) == [UnknownOutcome(10)]  # never a blind replay of a write
    assert of(out, Commit) == [Commit("s2", 5, 11)]
    assert of(out, SendTarget) == [SendTarget(Req(seq=11, body=b"get"))]  # idempotent: resent
    assert not of(out, SendSource)
    f = finished(out)
    assert f.outcome == "committed" and f.report.source_lost and f.report.unknown_outcomes == 1


@pytest.mark.parametrize(
    ("ops", "unknown", "resent"),
    [
        (["get", "incr", "get"], [10, 11], [12]),  # a resent 10 would answer after 11's unknown outcome
        (["incr", "get", "get"], [10], [11, 12]),
        (["get", "get"], [], [10, 11]),
        (["incr", "incr"], [10, 11], []),
    ],
)
def test_rebuild_resends_only_idempotent_requests_after_the_last_that_is_not(
    ops: list[str], unknown: list[int], resent: list[int]
) -> None:
    inflight = {10 + i: op.encode() for i, op in enumerate(ops)}
    m = make(inflight=inflight, idempotent=lambda body: body == b"get")
    to_fencing(m)
    out = m.handle(SourceFailed("reset"), 1.2)
    assert of(out, UnknownOutcome) == [UnknownOutcome(seq) for seq in unknown]
    # Consecutive seqs from where the target starts, so it never sees a gap.
    assert of(out, SendTarget) == [SendTarget(Req(seq=seq, body=inflight[seq])) for seq in resent]
    assert of(out, Commit) == [Commit("s2", 5, resent[0] if resent else 10 + len(ops))]
    # Every unknown outcome goes to the client before any resent request can be answered.
    kinds = [type(a) for a in out]
    if unknown and resent:
        assert max(i for i, k in enumerate(kinds) if k is UnknownOutcome) < kinds.index(SendTarget)


def test_fence_timeout_treats_source_as_lost() -> None:
    m = make(inflight={10: b"x"})
    to_fencing(m)
    out = m.handle(PhaseTimeout(), 9.0)
    assert of(out, UnknownOutcome) == [UnknownOutcome(10)] and finished(out).outcome == "committed"


def test_both_sides_lost_aborts() -> None:
    m = make()
    to_fencing(m)
    m.handle(TargetFailed("reset"), 5.0)
    out = m.handle(SourceFailed("reset"), 5.1)
    assert finished(out).outcome == "aborted"


def test_client_disconnect_mid_way_aborts_and_releases_target() -> None:
    m = make()
    to_fencing(m)
    out = m.handle(ClientGone(), 6.0)
    assert out[0] == CloseTarget() and finished(out).outcome == "aborted"
    assert m.handle(FromSource(Fenced(epoch=5, last_seq=1, deltas={})), 6.1) == []


def test_client_burst_during_quiesce_is_the_shells_buffer_not_the_source() -> None:
    """While FENCING the machine never forwards client frames to the source: only answers flow back."""
    m = make(inflight={10: b"a"})
    to_fencing(m)
    out = m.handle(FromSource(Res(seq=10, body=b"ra")), 7.0)
    assert out == [DeliverToClient(b"ra")]
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={})), 7.1)
    assert not of(out, SendSource) or all(isinstance(a.envelope, Release) for a in of(out, SendSource))
    assert ResumeClient() in out


def test_timeout_before_fence_rolls_back() -> None:
    m = make()
    m.start()
    m.handle(TargetConnected(), 1.0)
    out = m.handle(PhaseTimeout(), 10.0)
    assert finished(out).outcome == "rolled_back" and "attaching" in finished(out).cause


def test_a_source_lost_while_fencing_after_answering_new_requests_gives_the_target_the_right_next_seq() -> None:
    inflight: dict[int, bytes] = {}
    m = make(inflight=inflight)
    to_fencing(m)  # pre-copy attach said next_seq 11
    inflight.update({11: b"a", 12: b"b"})
    m.handle(FromSource(Res(seq=11, body=b"ra")), 100.02)
    m.handle(FromSource(Res(seq=12, body=b"rb")), 100.02)
    out = m.handle(SourceFailed("reset"), 100.03)  # the fence is never answered
    assert of(out, Commit) == [Commit("s2", 5, 13)] and not of(out, UnknownOutcome)


def test_a_request_that_reached_the_fenced_source_after_fenced_is_still_resent() -> None:
    inflight: dict[int, bytes] = {}
    m = make(inflight=inflight)
    to_fencing(m)
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={"game": Delta(version=2, set_={"s": 1})})), 1.0)
    assert of(out, SendTarget)  # a restore: commit waits for restored
    inflight[11] = b"late"  # forwarded although the client should have been held: dropped by the source
    out = m.handle(FromTarget(Restored(epoch=5, digests=digests(m.store, ["auth", "game"]))), 1.1)
    assert of(out, Commit) == [Commit("s2", 5, 11)]
    assert SendTarget(Req(seq=11, body=b"late")) in out


# -- replay as deltas from the pre-copied version (targets that advertise restore_deltas) -----------

BIG = {f"k{i:04d}": "x" * 56 for i in range(400)}  # about 25 KiB


def big_store() -> MemoryStore:
    s = MemoryStore(ttl_s=None)
    s.set_partition_data(SID, "auth", {"user": "ann"})
    s.set_partition_data(SID, "game", BIG)
    s.set_partition_data(SID, "cart", {"items": ["apple"]})
    return s


def apply(data: dict, delta: RestoreDelta) -> dict:
    """What a target does with a restore delta."""
    out = dict(data)
    for key in delta.delete:
        out.pop(key, None)
    out.update(delta.set_)
    return out


def replayed(out: list) -> Restore:
    [send] = of(out, SendTarget)
    assert isinstance(send.envelope, Restore)
    return send.envelope


def test_a_big_partition_changed_after_the_precopy_is_replayed_as_a_delta() -> None:
    m = make(store=big_store(), inflight={11: b"incr"})
    to_fencing(m, features=("something_else", RESTORE_DELTAS))
    precopied = m.precopy["game"]
    assert precopied.version == 1 and precopied.data == BIG
    change = Delta(version=2, set_={"k0007": "changed", "new": 1}, delete=("k0100",))
    m.handle(FromSource(Res(seq=11, body=b"r", deltas={"game": change})), 100.02)
    assert precopied.data == BIG  # the store moved on; what the target holds did not
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=11, deltas={})), 100.03)
    restore = replayed(out)
    assert restore.state == {}
    assert restore.deltas == {"game": RestoreDelta(1, 2, {"k0007": "changed", "new": 1}, ("k0100",))}
    current = m.store.get_partition_data(SID, "game")
    assert apply(BIG, restore.deltas["game"]) == current.data
    size = m.report.replay_bytes["game"]
    assert size == len(canonical_packb(restore.deltas["game"].to_wire())) < 60
    assert m.report.precopy_bytes["game"] > 25_000 and m.report.partitions_replayed == 2
    out = m.handle(FromTarget(Restored(epoch=5, digests=digests(m.store, ["auth", "game"]))), 100.04)
    assert finished(out).outcome == "committed"


def test_the_precopy_is_kept_without_a_copy() -> None:
    m = make(store=big_store())
    m.start()
    [send] = m.handle(TargetConnected(), 100.0)
    assert m.precopy["game"] is send.envelope.state["game"]  # the store's read-only view, shared


def test_several_versions_fold_into_one_delta() -> None:
    m = make(store=big_store(), inflight={11: b"a", 12: b"b"})
    to_fencing(m, features=(RESTORE_DELTAS,))
    m.handle(FromSource(Res(seq=11, body=b"a", deltas={"game": Delta(2, {"k0001": "one"})})), 1.0)
    m.handle(FromSource(Res(seq=12, body=b"b", deltas={"game": Delta(3, {"k0001": "two"}, ("k0002",))})), 1.1)
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=12, deltas={"game": Delta(4, {"k0002": "back"})})), 1.2)
    restore = replayed(out)
    assert restore.deltas == {"game": RestoreDelta(1, 4, {"k0001": "two", "k0002": "back"}, ())}


def test_without_the_feature_the_target_gets_full_states() -> None:
    m = make(store=big_store(), inflight={11: b"incr"})
    to_fencing(m)  # an attached without features: an older backend
    m.handle(FromSource(Res(seq=11, body=b"r", deltas={"game": Delta(2, {"k0007": "changed"})})), 1.0)
    restore = replayed(m.handle(FromSource(Fenced(epoch=5, last_seq=11, deltas={})), 1.1))
    assert restore.deltas == {} and restore.state["game"].data == {**BIG, "k0007": "changed"}
    assert m.report.replay_bytes["game"] == restore.state["game"].canonical_size > 25_000
    assert "deltas" not in restore.to_wire()  # the wire form an older backend knows


def test_a_delta_bigger_than_the_partition_is_sent_as_the_full_state() -> None:
    m = make(inflight={10: b"incr"})  # game is {"score": 3}: any delta outweighs it
    to_fencing(m, features=(RESTORE_DELTAS,))
    m.handle(FromSource(Res(seq=10, body=b"r", deltas={"game": Delta(2, {"score": 4})})), 1.0)
    out = m.handle(FromSource(Fenced(epoch=5, last_seq=10, deltas={"auth": Delta(2, {"role": "admin"})})), 1.1)
    restore = replayed(out)
    assert restore.deltas == {} and set(restore.state) == {"auth", "game"}
    assert m.report.replay_bytes == {name: ps.canonical_size for name, ps in restore.state.items()}
    assert m.report.replay_bytes["game"] == len(canonical_packb({"score": 4}))


def test_a_partition_rewritten_entirely_is_sent_in_full() -> None:
    m = make(store=big_store(), inflight={11: b"reset"})
    to_fencing(m, features=(RESTORE_DELTAS,))
    fresh = {f"z{i:04d}": "y" * 56 for i in range(400)}
    m.handle(FromSource(Res(seq=11, body=b"r", deltas={"game": Delta(2, data=fresh)})), 1.0)
    restore = replayed(m.handle(FromSource(Fenced(epoch=5, last_seq=11, deltas={})), 1.1))
    assert restore.deltas == {} and restore.state["game"].data == fresh


def test_a_target_refusing_the_delta_rolls_back_to_the_source() -> None:
    m = make(store=big_store(), inflight={11: b"a", 12: b"b"})
    to_fencing(m, features=(RESTORE_DELTAS,))
    m.handle(FromSource(Res(seq=11, body=b"a", deltas={"game": Delta(2, {"k0001": "one"})})), 1.0)
    assert replayed(m.handle(FromSource(Fenced(epoch=5, last_seq=11, deltas={})), 1.1)).deltas
    out = m.handle(FromTarget(Error(code="bad_state", message="restore delta from version 1, 3 held")), 1.2)
    f = finished(out)
    assert f.outcome == "rolled_back" and "bad_state" in f.cause and CloseTarget() in out
    sent = [a.envelope for a in of(out, SendSource)]
    assert isinstance(sent[0], Attach) and sent[0].epoch == 6
    assert sent[0].state["game"].data == {**BIG, "k0001": "one"}  # the source gets the full state back
    assert sent[1:] == [Req(seq=12, body=b"b")] and ResumeClient() in out


def test_a_rebuild_after_the_source_died_replays_deltas_too() -> None:
    m = make(store=big_store(), inflight={11: b"a"})
    to_fencing(m, features=(RESTORE_DELTAS,))
    m.handle(FromSource(Push(body=b"tick", deltas={"game": Delta(2, {"k0003": 3})})), 1.0)
    out = m.handle(SourceFailed("reset"), 1.1)
    assert of(out, UnknownOutcome) == [UnknownOutcome(11)]
    assert replayed(out).deltas == {"game": RestoreDelta(1, 2, {"k0003": 3}, ())}


@pytest.mark.parametrize(
    "before,after",
    [
        (1, True),  # equal in Python, not on the wire
        (0.0, -0.0),
        (1, 1.0),
        ([1, 2], [1, True]),
        ({"a": 1}, {"a": 1.0}),
        ("s", b"s"),
        (None, False),
    ],
)
def test_restore_delta_compares_values_by_encoding(before, after) -> None:
    base = {f"k{i}": "x" * 50 for i in range(20)}
    old = PartitionState(3, {**base, "v": before})
    new = PartitionState(4, {**base, "v": after})
    delta, size = restore_delta(old, new)
    assert delta == RestoreDelta(3, 4, {"v": after}, ())
    assert size == len(canonical_packb(delta.to_wire()))
    assert canonical_packb(apply(old.data, delta)) == canonical_packb(new.data)


def test_restore_delta_sends_nothing_for_equal_values_and_lists_deleted_keys() -> None:
    base = {f"k{i}": [i, {"n": i}] for i in range(50)}
    old = PartitionState(1, msgpack.unpackb(msgpack.packb(base), strict_map_key=False))
    new = PartitionState(5, {k: v for k, v in base.items() if k not in ("k1", "k2")})
    delta, _ = restore_delta(old, new)
    assert delta == RestoreDelta(1, 5, {}, ("k1", "k2"))


def test_restore_delta_declines_when_not_worth_it() -> None:
    old = PartitionState(1, {"a": 1, "b": 2})
    assert restore_delta(old, PartitionState(2, {"a": 5, "b": 6})) is None  # bigger than {"a":5,"b":6}
    assert restore_delta(old, PartitionState(1, {"a": 1, "b": 2})) is None  # not newer
    assert restore_delta(PartitionState(0, {}), PartitionState(1, {"a": 1})) is None  # from nothing
