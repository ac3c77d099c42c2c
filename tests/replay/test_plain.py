"""The plain dialect's sans-IO core: rules, the recorder and the quiesce/replay machine (no sockets)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.plain import (
    ClientFrame,
    ClientGone,
    CloseSource,
    CloseTarget,
    Commit,
    Compaction,
    Condition,
    ConnectTarget,
    DeliverToClient,
    Finished,
    Overflow,
    PartitionOverflowed,
    PauseClient,
    Phase,
    PlainMigration,
    Recorder,
    ReleaseClientFrames,
    RepliesLost,
    ResumeClient,
    Rule,
    RuleError,
    RuleSet,
    SendTarget,
    SourceFailed,
    SourceReply,
    StopReadingClient,
    TargetConnected,
    TargetFailed,
    TargetReply,
    Tick,
)


def f(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def ops(frames) -> list[tuple[str, dict, int]]:
    return [(p, msgpack.unpackb(body), replies) for p, body, replies in frames]


GAME_RULES = [
    {"match": {"op": "login"}, "partition": "auth", "compaction": "last"},
    {"match": {"op": "join_room"}, "partition": "game", "compaction": "last"},
    {"match": {"op": "cart_add"}, "partition": "cart", "compaction": "last-by-key", "key": "item"},
    {"match": {"op": "say"}, "partition": "chat", "compaction": "log", "replies": 0},
]


def recorder(rules=GAME_RULES, **kw) -> Recorder:
    return Recorder(RuleSet.from_config(rules, **kw))


# == rules ==========================================================================================


def test_rule_from_mapping_builds_conditions_and_defaults() -> None:
    rule = Rule.from_mapping({"match": {"op": "login", "v": 2}, "partition": "auth"})
    assert [(c.name, c.value) for c in rule.match] == [("op", "login"), ("v", 2)]
    assert rule.compaction is Compaction.LOG  # keeps everything unless told otherwise
    assert rule.replies == 1
    policy = RuleSet([rule]).policies["auth"]
    assert (policy.max_frames, policy.max_bytes, policy.overflow) == (1024, 128 * 1024, Overflow.FAIL)


def test_invalid_rules_report_every_problem_with_its_location() -> None:
    with pytest.raises(RuleError) as err:
        RuleSet.from_config(
            [
                {
                    "match": {"op": "a"},
                    "partition": "auth",
                    "compaction": "newest",
                    "replies": -1,
                    "colour": 1,
                },
                {"match": {}, "partition": ".hidden"},
                {"match": {"op": "b"}, "partition": "cart", "compaction": "last-by-key"},
                {"match": {"op": "c"}, "partition": "game", "compaction": "last", "key": "x"},
                {"partition": "game"},
                {"match": {"op": "d"}, "partition": "game", "replies": True, "max_bytes": 0},
            ]
        )
    locs = {p.loc for p in err.value.problems}
    assert {(0, "colour"), (0, "compaction"), (0, "replies")} <= locs
    assert (1, "match") in locs and (1, "partition") in locs
    assert (2, "key") in locs
    assert (3, "key") in locs
    assert (4, "match") in locs
    assert (5, "replies") in locs and (5, "max_bytes") in locs
    assert "last-by-key needs the name of the key field" in str(err.value)
    assert "2.key: " in str(err.value)


def test_rule_errors_name_the_bad_value() -> None:
    with pytest.raises(RuleError, match="must be one of last, log, last-by-key, not 'newest'"):
        Rule.from_mapping({"match": {"op": "a"}, "partition": "auth", "compaction": "newest"})
    with pytest.raises(RuleError, match="must be fail or drop_oldest"):
        Rule.from_mapping({"match": {"op": "a"}, "partition": "auth", "overflow": "wrap"})
    with pytest.raises(RuleError, match="cannot be compared with msgpack values"):
        Condition("op", object())


def test_rules_of_one_partition_must_agree() -> None:
    with pytest.raises(RuleError) as err:
        RuleSet.from_config(
            [
                {"match": {"op": "join"}, "partition": "game", "compaction": "last"},
                {"match": {"op": "leave"}, "partition": "game", "compaction": "log"},
                {"match": {"op": "x"}, "partition": "cart", "compaction": "log", "max_frames": 5},
                {"match": {"op": "y"}, "partition": "cart", "compaction": "log", "max_frames": 6},
            ]
        )
    assert {p.loc for p in err.value.problems} == {(1, "compaction"), (3, "max_frames")}
    assert "rules of one partition must agree" in str(err.value)
    # One rule may carry the partition's limits for all of them.
    rs = RuleSet.from_config(
        [
            {"match": {"op": "x"}, "partition": "cart", "max_frames": 5},
            {"match": {"op": "y"}, "partition": "cart"},
        ]
    )
    assert rs.policies["cart"].max_frames == 5


def test_first_matching_rule_wins() -> None:
    rec = recorder(
        [
            {"match": {"op": "move", "zone": "lobby"}, "partition": "lobby", "compaction": "last"},
            {"match": {"op": "move"}, "partition": "game", "compaction": "last"},
            {"match": {"zone": "lobby"}, "partition": "never", "compaction": "last"},
        ]
    )
    assert rec.record(f(op="move", zone="lobby")) == "lobby"
    assert rec.record(f(op="move", zone="arena")) == "game"
    assert rec.record(f(op="move")) == "game"  # a missing field fails only the rule that names it
    assert rec.partitions() == ["game", "lobby"]


def test_conditions_compare_msgpack_types_exactly() -> None:
    rec = recorder([{"match": {"level": 1}, "partition": "p", "compaction": "log"}])
    assert rec.record(f(level=1)) == "p"
    assert rec.record(f(level=1.0)) is None
    assert rec.record(f(level=True)) is None
    assert rec.record(f(level="1")) is None
    binary = recorder([{"match": {"op": b"login"}, "partition": "p", "compaction": "log"}])
    assert binary.record(f(op=b"login")) == "p"
    assert binary.record(f(op="login")) is None


def test_frames_that_are_not_one_msgpack_map_are_not_recorded() -> None:
    rec = recorder()
    for body in (
        msgpack.packb(["login"]),
        msgpack.packb("login"),
        b"",
        b"\xc1",  # never used in msgpack
        f(op="login") + b"\x00",  # trailing bytes
        f(op="login")[:-1],  # truncated
        b"\x81\xa2op\xa5log\xffn",  # invalid UTF-8 in a str
        b"GET / HTTP/1.1\r\n\r\n",
    ):
        assert rec.observe(body) == (None, 1)
    assert rec.partitions() == [] and rec.frames_for(["auth"]) == []


def test_unrecorded_frames_expect_the_default_number_of_replies() -> None:
    rec = recorder(default_replies=0)
    assert rec.observe(f(op="ping")) == (None, 0)
    assert rec.observe(f(op="say", text="hi")) == ("chat", 0)
    assert rec.observe(f(op="login", user="ann")) == ("auth", 1)
    assert rec.rules.expected_replies(f(op="login")) == 1


# == compaction =====================================================================================


def test_last_keeps_only_the_newest_frame() -> None:
    rec = recorder()
    rec.record(f(op="login", user="ann"))
    rec.record(f(op="login", user="bob"))
    assert ops(rec.frames_for(["auth"])) == [("auth", {"op": "login", "user": "bob"}, 1)]
    assert rec.bytes_per_partition() == {"auth": len(f(op="login", user="bob"))}
    assert rec.frames_per_partition() == {"auth": 1}


def test_last_spans_every_rule_of_its_partition() -> None:
    rec = recorder(
        [
            {"match": {"op": "join_room"}, "partition": "game", "compaction": "last"},
            {"match": {"op": "leave_room"}, "partition": "game", "compaction": "last"},
        ]
    )
    rec.record(f(op="join_room", room=1))
    rec.record(f(op="leave_room"))
    assert ops(rec.frames_for(["game"])) == [("game", {"op": "leave_room"}, 1)]


def test_log_keeps_every_frame_in_order() -> None:
    rec = recorder()
    for i in range(3):
        rec.record(f(op="say", n=i))
    assert [m["n"] for _, m, _ in ops(rec.frames_for(["chat"]))] == [0, 1, 2]
    assert rec.frames_per_partition() == {"chat": 3}


def test_last_by_key_keeps_the_newest_frame_per_key() -> None:
    rec = recorder()
    rec.record(f(op="cart_add", item="apple", n=1))
    rec.record(f(op="cart_add", item="pear", n=1))
    rec.record(f(op="cart_add", item="apple", n=3))
    rec.record(f(op="cart_add", item=1, n=9))  # the integer 1 is another key than "1" or True
    rec.record(f(op="cart_add", item=True, n=8))
    rec.record(f(op="cart_add", n=7))  # no key: frames without it share one slot
    rec.record(f(op="cart_add", n=6))
    got = [(m.get("item"), m["n"]) for _, m, _ in ops(rec.frames_for(["cart"]))]
    # A replacement keeps the place of the frame it replaces.
    assert got == [("apple", 3), ("pear", 1), (1, 9), (True, 8), (None, 6)]


def test_replay_order_follows_the_client_across_partitions() -> None:
    rec = recorder()
    rec.record(f(op="login", user="ann"))
    rec.record(f(op="say", text="hello"))
    rec.record(f(op="join_room", room=7))
    rec.record(f(op="cart_add", item="apple"))
    rec.record(f(op="say", text="bye"))
    got = [(p, m["op"]) for p, m, _ in ops(rec.frames_for(["chat", "cart", "game", "auth"]))]
    assert got == [
        ("auth", "login"),
        ("chat", "say"),
        ("game", "join_room"),
        ("cart", "cart_add"),
        ("chat", "say"),
    ]
    # Only requires ∩ present, still in the client's order; unknown names are ignored.
    assert [p for p, _, _ in rec.frames_for(["game", "auth", "nothing"])] == ["auth", "game"]


def test_a_new_login_still_replays_before_the_join() -> None:
    rec = recorder()
    rec.record(f(op="login", user="ann"))
    rec.record(f(op="join_room", room=7))
    rec.record(f(op="login", user="ann", token="fresh"))
    got = ops(rec.frames_for(["auth", "game"]))
    assert [m["op"] for _, m, _ in got] == ["login", "join_room"]
    assert got[0][1]["token"] == "fresh"


# == overflow =======================================================================================


def test_log_overflow_fail_drops_the_partition_and_refuses_replay() -> None:
    rec = recorder([{"match": {"op": "say"}, "partition": "chat", "max_frames": 2}, *GAME_RULES[:1]])
    rec.record(f(op="login", user="ann"))
    rec.record(f(op="say", n=1))
    rec.record(f(op="say", n=2))
    assert rec.overflowed() == frozenset()
    assert rec.record(f(op="say", n=3)) == "chat"
    assert rec.overflowed() == {"chat"}
    assert rec.bytes_per_partition() == {"auth": len(f(op="login", user="ann"))}  # memory given back
    rec.record(f(op="say", n=4))  # lost frames cannot come back: it stays overflowed
    assert rec.overflowed() == {"chat"}
    with pytest.raises(PartitionOverflowed, match="'chat'"):
        rec.frames_for(["auth", "chat"])
    assert [p for p, _, _ in rec.frames_for(["auth"])] == ["auth"]  # other partitions still replay
    assert rec.partitions() == ["auth", "chat"]


def test_log_overflow_drop_oldest_keeps_the_newest_within_both_bounds() -> None:
    size = len(f(op="say", n=0))
    rules = [{"match": {"op": "say"}, "partition": "chat", "max_frames": 3, "overflow": "drop_oldest"}]
    rec = recorder(rules)
    for i in range(10):
        rec.record(f(op="say", n=i))
    assert [m["n"] for _, m, _ in ops(rec.frames_for(["chat"]))] == [7, 8, 9]
    rules = [{"match": {"op": "say"}, "partition": "chat", "max_bytes": 2 * size, "overflow": "drop_oldest"}]
    rec = recorder(rules)
    for i in range(5):
        rec.record(f(op="say", n=i))
    assert [m["n"] for _, m, _ in ops(rec.frames_for(["chat"]))] == [3, 4]
    assert rec.bytes_per_partition() == {"chat": 2 * size}
    assert rec.overflowed() == frozenset()


def test_a_frame_larger_than_max_bytes_overflows_under_any_policy() -> None:
    rules = [{"match": {"op": "say"}, "partition": "chat", "max_bytes": 40, "overflow": "drop_oldest"}]
    rec = recorder(rules)
    rec.record(f(op="say", n=1))
    rec.record(f(op="say", text="x" * 100))
    assert rec.overflowed() == {"chat"}


def test_an_overflowed_last_partition_heals_with_its_next_frame() -> None:
    rec = recorder([{"match": {"op": "login"}, "partition": "auth", "compaction": "last", "max_bytes": 40}])
    rec.record(f(op="login", blob="x" * 100))
    assert rec.overflowed() == {"auth"}
    rec.record(f(op="login", user="ann"))
    assert rec.overflowed() == frozenset()
    assert ops(rec.frames_for(["auth"])) == [("auth", {"op": "login", "user": "ann"}, 1)]


def test_last_by_key_bounds_the_number_of_keys() -> None:
    rules = [
        {
            "match": {"op": "cart_add"},
            "partition": "cart",
            "compaction": "last-by-key",
            "key": "item",
            "max_frames": 2,
            "overflow": "drop_oldest",
        }
    ]
    rec = recorder(rules)
    rec.record(f(op="cart_add", item="a"))
    rec.record(f(op="cart_add", item="b"))
    rec.record(f(op="cart_add", item="a", n=2))  # a replacement does not count as a new frame
    assert [m["item"] for _, m, _ in ops(rec.frames_for(["cart"]))] == ["a", "b"]
    rec.record(f(op="cart_add", item="c"))  # evicts the oldest place: "a"
    assert [m["item"] for _, m, _ in ops(rec.frames_for(["cart"]))] == ["b", "c"]
    rec.record(f(op="cart_add", item="a", n=5))  # "a" is a new key again
    assert [m["item"] for _, m, _ in ops(rec.frames_for(["cart"]))] == ["c", "a"]


# == persistence ====================================================================================


def test_state_is_seq_to_frame_per_partition_and_loads_back() -> None:
    rec = recorder()
    rec.record(f(op="login", user="ann"))  # seq 1
    rec.record(f(op="ping"))  # not recorded: takes no seq
    rec.record(f(op="join_room", room=7))  # seq 2
    rec.record(f(op="say", text="hi"))  # seq 3
    rec.record(f(op="login", user="ann", token="t"))  # seq 4, takes the place of seq 1
    state = rec.state()
    assert state == {
        "auth": {1: f(op="login", user="ann", token="t")},
        "game": {2: f(op="join_room", room=7)},
        "chat": {3: f(op="say", text="hi")},
    }
    assert rec.take_changed() == {"auth", "game", "chat"}
    assert rec.take_changed() == set()
    # What the partition store gives back after a restart (msgpack round trip).
    stored = msgpack.unpackb(msgpack.packb(state, use_bin_type=True), raw=False, strict_map_key=False)
    again = recorder()
    assert again.load(stored) == 0
    assert again.frames_for(["auth", "game", "chat"]) == rec.frames_for(["auth", "game", "chat"])
    assert again.take_changed() == set()  # nothing differs from the store
    again.record(f(op="say", text="later"))
    assert max(again.state()["chat"]) == 4  # numbering continues after the highest loaded seq


def test_load_reclassifies_with_the_current_rules() -> None:
    state = {
        "auth": {1: f(op="login", user="ann")},
        "game": {2: f(op="join_room", room=7), 3: f(op="join_room", room=8)},
        "gone": {4: f(op="old_op")},
        "chat": {5: "not bytes", "junk": b"x"},
    }
    rec = recorder()
    assert rec.load(state) == 3  # "gone" and both bad entries; the superseded join is compacted, not dropped
    assert [(p, m["op"]) for p, m, _ in ops(rec.frames_for(["auth", "game", "gone", "chat"]))] == [
        ("auth", "login"),
        ("game", "join_room"),
    ]
    assert ops(rec.frames_for(["game"]))[0][1]["room"] == 8
    assert rec.take_changed() == {"game", "gone", "chat"}  # to write back to the store


def test_the_overflow_mark_survives_persistence() -> None:
    rules = [{"match": {"op": "say"}, "partition": "chat", "max_frames": 1}]
    rec = recorder(rules)
    rec.record(f(op="say", n=1))
    rec.record(f(op="say", n=2))
    assert rec.state() == {"chat": {"overflowed": True}}
    again = recorder(rules)
    again.load(rec.state())
    assert again.overflowed() == {"chat"}


# == the migration machine ===========================================================================


def session() -> Recorder:
    rec = recorder()
    rec.record(f(op="login", user="ann"))
    rec.record(f(op="join_room", room=7))
    rec.record(f(op="say", text="hi"))  # replies: 0
    rec.record(f(op="cart_add", item="apple"))
    return rec


def machine(rec=None, outstanding=0, requires=("auth", "game", "chat"), **kw) -> PlainMigration:
    return PlainMigration(
        source="s1",
        target="s2",
        recorder=rec if rec is not None else session(),
        target_requires=requires,
        outstanding=outstanding,
        now_s=100.0,
        **kw,
    )


def sent(actions) -> list[bytes]:
    return [a.body for a in actions if isinstance(a, SendTarget)]


def finished(actions) -> Finished:
    (fin,) = [a for a in actions if isinstance(a, Finished)]
    return fin


def test_happy_path_quiesces_replays_and_commits() -> None:
    m = machine(outstanding=2)
    assert m.start() == [PauseClient(), ConnectTarget("s2")]
    assert m.phase is Phase.QUIESCING
    assert m.deadline_s == 105.0
    assert m.handle(SourceReply(b"r1"), 100.1) == [DeliverToClient(b"r1")]
    assert m.handle(TargetConnected(), 100.15) == []  # still waiting for the source
    out = m.handle(SourceReply(b"r2"), 100.2)
    assert out == [DeliverToClient(b"r2"), SendTarget("auth", f(op="login", user="ann"))]
    assert m.phase is Phase.REPLAYING
    assert m.deadline_s == pytest.approx(105.2)  # the replay phase has its own deadline
    # The join goes out only once the login is answered (one frame at a time).
    assert m.handle(TargetReply(b"welcome ann"), 100.3) == [SendTarget("game", f(op="join_room", room=7))]
    # A frame with replies 0 is followed by the next at once; the last answered reply commits.
    out = m.handle(TargetReply(b"joined 7"), 100.4)
    assert out[0] == SendTarget("chat", f(op="say", text="hi"))
    assert out[1:4] == [Commit("s2"), ResumeClient(), CloseSource()]
    fin = finished(out)
    assert fin.outcome == "committed" and fin.cause is None
    assert m.phase is Phase.COMMITTED
    r = fin.report
    assert r.pause_s == pytest.approx(0.4)
    assert r.quiesce_s == pytest.approx(0.2)
    assert r.outstanding_at_pause == 2
    assert r.replay_frames == {"auth": 1, "game": 1, "chat": 1}
    assert r.replay_bytes == {
        "auth": len(f(op="login", user="ann")),
        "game": len(f(op="join_room", room=7)),
        "chat": len(f(op="say", text="hi")),
    }
    assert (r.swallowed_frames, r.swallowed_bytes) == (2, len(b"welcome ann") + len(b"joined 7"))
    assert (r.partitions_present, r.partitions_replayed) == (4, 3)  # cart is present, not required
    d = r.as_dict()
    assert d["outcome"] == "committed" and d["replay_bytes"] == r.replay_bytes and d["pause_s"] == r.pause_s


def test_nothing_outstanding_replays_as_soon_as_the_target_is_up() -> None:
    m = machine(requires=("auth",))
    m.start()
    assert m.phase is Phase.CONNECTING
    assert m.report.quiesce_s == 0.0
    assert sent(m.handle(TargetConnected(), 100.01)) == [f(op="login", user="ann")]


def test_an_empty_session_commits_without_replaying() -> None:
    m = machine(rec=recorder())
    m.start()
    out = m.handle(TargetConnected(), 100.01)
    assert sent(out) == []
    assert finished(out).outcome == "committed"
    assert finished(out).report.partitions_replayed == 0


def test_exactly_n_replies_are_swallowed_per_replayed_frame() -> None:
    rules = [
        {"match": {"op": "login"}, "partition": "auth", "compaction": "last", "replies": 2},
        {"match": {"op": "join_room"}, "partition": "game", "compaction": "last", "replies": 3},
    ]
    rec = recorder(rules)
    rec.record(f(op="login"))
    rec.record(f(op="join_room"))
    m = machine(rec=rec, requires=("auth", "game"))
    m.start()
    assert sent(m.handle(TargetConnected(), 100.0)) == [f(op="login")]
    assert m.handle(TargetReply(b"login-1"), 100.1) == []
    assert sent(m.handle(TargetReply(b"login-2"), 100.1)) == [f(op="join_room")]
    assert m.handle(TargetReply(b"join-1"), 100.2) == []
    assert m.handle(TargetReply(b"join-2"), 100.2) == []
    out = m.handle(TargetReply(b"join-3"), 100.3)
    assert Commit("s2") in out and finished(out).report.swallowed_frames == 5
    # A fourth reply is more than the rules promised: after the commit it belongs to the client.
    assert m.handle(TargetReply(b"room news"), 100.4) == [DeliverToClient(b"room news")]


def test_client_frames_during_quiesce_are_buffered_and_released_after_commit() -> None:
    m = machine(outstanding=1, requires=("auth",), max_buffered_bytes=10)
    m.start()
    assert m.handle(ClientFrame(b"abcd"), 100.01) == []
    assert m.handle(ClientFrame(b"efgh"), 100.02) == []
    assert m.handle(ClientFrame(b"ijkl"), 100.03) == [StopReadingClient()]  # past the bound: backpressure
    assert m.handle(ClientFrame(b"mn"), 100.04) == []  # already read: kept, and asked only once
    m.handle(SourceReply(b"r"), 100.05)
    m.handle(TargetConnected(), 100.06)
    out = m.handle(TargetReply(b"welcome"), 100.07)
    assert out[:3] == [Commit("s2"), ReleaseClientFrames((b"abcd", b"efgh", b"ijkl", b"mn")), ResumeClient()]
    r = finished(out).report
    assert (r.buffered_frames, r.buffered_bytes) == (4, 14)


def test_quiesce_timeout_rolls_back_to_the_source() -> None:
    m = machine(outstanding=3, quiesce_timeout_s=2.0)
    m.start()
    m.handle(SourceReply(b"r1"), 100.5)
    m.handle(ClientFrame(b"next"), 101.0)
    assert m.handle(Tick(), 101.9) == []
    out = m.handle(Tick(), 102.0)
    assert out[:3] == [CloseTarget(), ReleaseClientFrames((b"next",)), ResumeClient()]
    fin = finished(out)
    assert fin.outcome == "rolled_back"
    assert fin.cause.startswith("quiesce_timeout: 2 replies still outstanding")
    assert fin.report.pause_s == pytest.approx(2.0)
    assert fin.report.replay_frames == {}
    # The source still owes its replies: they go to the client.
    assert m.handle(SourceReply(b"late"), 102.5) == [DeliverToClient(b"late")]
    assert m.handle(TargetReply(b"x"), 102.5) == []


def test_without_a_quiesce_timeout_the_wait_has_no_deadline() -> None:
    m = machine(outstanding=1, quiesce_timeout_s=None)
    m.start()
    assert m.deadline_s is None
    assert m.handle(Tick(), 10_000.0) == []
    assert m.phase is Phase.QUIESCING


def test_replay_timeout_rolls_back() -> None:
    m = machine(replay_timeout_s=1.0)
    m.start()
    m.handle(TargetConnected(), 100.1)
    out = m.handle(Tick(), 101.0)
    assert finished(out).outcome == "rolled_back"
    assert finished(out).cause.startswith("replay_timeout")
    assert CloseTarget() in out


def test_target_failure_during_replay_rolls_back_to_the_source() -> None:
    m = machine(outstanding=1)
    m.start()
    m.handle(ClientFrame(b"buffered"), 100.05)
    m.handle(SourceReply(b"r"), 100.1)
    m.handle(TargetConnected(), 100.1)
    m.handle(TargetReply(b"welcome"), 100.2)
    out = m.handle(TargetFailed("connection reset"), 100.3)
    assert out[:3] == [CloseTarget(), ReleaseClientFrames((b"buffered",)), ResumeClient()]
    fin = finished(out)
    assert (fin.outcome, fin.cause) == ("rolled_back", "target_failed: connection reset")
    assert Commit("s2") not in out and CloseSource() not in out
    assert fin.report.replay_frames == {"auth": 1, "game": 1}
    assert m.handle(TargetReply(b"joined"), 100.4) == []  # the target's late reply is nobody's


def test_target_refusing_the_connection_rolls_back() -> None:
    m = machine(outstanding=1)
    m.start()
    fin = finished(m.handle(TargetFailed("connection refused"), 100.01))
    assert fin.outcome == "rolled_back"
    # Replies the source still owes keep flowing to the client.
    assert m.handle(SourceReply(b"r"), 100.1) == [DeliverToClient(b"r")]


def test_an_unexpected_target_frame_before_replay_rolls_back() -> None:
    m = machine(outstanding=1)
    m.start()
    m.handle(TargetConnected(), 100.01)
    out = m.handle(TargetReply(b"motd"), 100.02)
    assert finished(out).outcome == "rolled_back"
    assert finished(out).cause.startswith("unexpected_target_frame")


def test_the_targets_greeting_is_swallowed_before_the_replay() -> None:
    m = machine(requires=("auth",), greeting_frames=2)
    m.start()
    assert m.handle(TargetConnected(), 100.01) == []
    assert m.handle(TargetReply(b"hello"), 100.02) == []
    assert sent(m.handle(TargetReply(b"motd"), 100.03)) == [f(op="login", user="ann")]
    out = m.handle(TargetReply(b"welcome"), 100.04)
    r = finished(out).report
    assert (r.greeting_frames, r.swallowed_frames) == (2, 3)


def test_a_required_overflowed_partition_defers_without_pausing() -> None:
    rec = recorder([{"match": {"op": "say"}, "partition": "chat", "max_frames": 1}])
    rec.record(f(op="say", n=1))
    rec.record(f(op="say", n=2))
    out = machine(rec=rec, requires=("chat",)).start()
    assert len(out) == 1
    fin = finished(out)
    assert fin.outcome == "deferred" and "partition_overflowed" in fin.cause
    assert fin.report.pause_s is None
    # A target that does not need it migrates fine.
    m = machine(rec=rec, requires=("auth",))
    m.start()
    assert finished(m.handle(TargetConnected(), 100.0)).outcome == "committed"


def test_client_leaving_aborts() -> None:
    m = machine(outstanding=1)
    m.start()
    out = m.handle(ClientGone(), 100.1)
    assert out[0] == CloseTarget()
    assert finished(out).outcome == "aborted"
    assert m.done


def test_source_dying_during_quiesce_continues_on_the_target() -> None:
    m = machine(outstanding=2, requires=("auth",))
    m.start()
    m.handle(SourceReply(b"r1"), 100.1)
    m.handle(TargetConnected(), 100.1)
    out = m.handle(SourceFailed("eof"), 100.2)
    assert out == [RepliesLost(1), SendTarget("auth", f(op="login", user="ann"))]
    assert m.handle(SourceReply(b"ghost"), 100.25) == []
    fin = finished(m.handle(TargetReply(b"welcome"), 100.3))
    assert fin.outcome == "committed"
    assert fin.report.source_lost and fin.report.replies_lost == 1
    assert fin.report.as_dict()["unknown_outcomes"] == 1


def test_target_failing_after_the_source_died_aborts() -> None:
    m = machine(outstanding=1)
    m.start()
    m.handle(SourceFailed("eof"), 100.1)
    out = m.handle(TargetFailed("reset"), 100.2)
    assert finished(out).outcome == "aborted"
    assert "source already lost" in finished(out).cause
    assert ResumeClient() not in out


def test_events_before_start_and_a_second_start_are_refused() -> None:
    m = machine()
    with pytest.raises(RuntimeError):
        m.handle(Tick(), 100.0)
    m.start()
    with pytest.raises(RuntimeError):
        m.start()
    with pytest.raises(ValueError, match="outstanding"):
        machine(outstanding=-1)


# == invariants under any traffic ===================================================================

_traffic = st.lists(
    st.one_of(
        st.builds(lambda u: f(op="login", user=u), st.sampled_from(["ann", "bob"])),
        st.builds(lambda r: f(op="join_room", room=r), st.integers(0, 3)),
        st.builds(
            lambda i, n: f(op="cart_add", item=i, n=n),
            st.sampled_from(["a", "b", "c", "d"]),
            st.integers(0, 9),
        ),
        st.builds(lambda t: f(op="say", text=t), st.text(max_size=30)),
        st.binary(max_size=20),
    ),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(traffic=_traffic, overflow=st.sampled_from(["fail", "drop_oldest"]))
def test_bounds_accounting_order_and_persistence_hold_for_any_traffic(traffic, overflow) -> None:
    rules = [
        {"match": {"op": "login"}, "partition": "auth", "compaction": "last", "max_bytes": 30},
        {"match": {"op": "join_room"}, "partition": "game", "compaction": "last"},
        {
            "match": {"op": "cart_add"},
            "partition": "cart",
            "compaction": "last-by-key",
            "key": "item",
            "max_frames": 3,
            "overflow": overflow,
        },
        {
            "match": {"op": "say"},
            "partition": "chat",
            "max_frames": 5,
            "max_bytes": 120,
            "overflow": overflow,
        },
    ]
    rec = recorder(rules)
    for body in traffic:
        rec.record(body)
    policies = rec.rules.policies
    sizes = rec.bytes_per_partition()
    counts = rec.frames_per_partition()
    present = [p for p in rec.partitions() if p not in rec.overflowed()]
    frames = rec.frames_for(present)
    for name in present:
        mine = [body for p, body, _ in frames if p == name]
        assert sum(map(len, mine)) == sizes.get(name, 0)
        assert len(mine) == counts.get(name, 0) <= policies[name].max_frames
        assert sizes.get(name, 0) <= policies[name].max_bytes
    # Every replayed frame was sent by the client; a log replays a subsequence of what it was sent.
    assert all(body in traffic for _, body, _ in frames)
    chat = [body for p, body, _ in frames if p == "chat"]
    said = [
        b
        for b in traffic
        if rec.rules.classify(b).rule is not None and rec.rules.classify(b).rule.partition == "chat"
    ]
    it = iter(said)
    assert all(body in it for body in chat)
    if overflow == "drop_oldest" and chat:
        assert chat == said[-len(chat) :]  # the newest ones survive
    # The last login is the one replayed.
    logins = [b for b in traffic if b in (f(op="login", user="ann"), f(op="login", user="bob"))]
    assert [body for p, body, _ in frames if p == "auth"] == logins[-1:]
    # Persistence round trip.
    again = recorder(rules)
    assert again.load(rec.state()) == 0
    assert again.frames_for(present) == frames
    assert again.overflowed() == rec.overflowed()
