"""The pieces ``proxy.scale.live`` builds from the configuration and the learner's replies."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from proxy.conf import load_config_text
from proxy.core.pool import AdminState
from proxy.scale.core import ConnectionView
from proxy.scale.live import PoolFleet, forecast_view, make_provisioner
from proxy.scale.provisioners import ProcessProvisioner, StaticProvisioner

BASE = """\
listeners: [{name: play, bind: '127.0.0.1:0', mode: frames, pool: game}]
pools: [{name: game, servers: [{name: s1, address: '127.0.0.1:9001'}]}]
"""


def test_forecast_is_converted_to_the_scalers_step() -> None:
    reply = {"model": "holt", "beats_naive": True, "step_s": 60.0, "points": [[60, 10, 20, 30], [120, 12, 24, 36]]}
    view = forecast_view(reply, 60.0)
    assert view is not None
    assert view.points == ((60.0, 10.0, 20.0, 30.0), (120.0, 12.0, 24.0, 36.0))
    assert (view.beats_naive, view.step_s, view.model) == (True, 60.0, "holt")
    # A 15 s decision step: a quarter of each minute's messages.
    quarter = forecast_view(reply, 15.0)
    assert quarter is not None and quarter.points[0] == (60.0, 2.5, 5.0, 7.5) and quarter.step_s == 60.0
    assert view.beats_naive_at == ()
    per_horizon = forecast_view({**reply, "beats_naive_at": [True, False]}, 60.0)
    assert per_horizon is not None and per_horizon.beats_naive_at == (True, False)


def test_missing_or_malformed_forecasts_are_none() -> None:
    for reply in (None, {}, {"points": [], "step_s": 60}, {"points": [[1, 2, 3, 4]], "step_s": 0},
                  {"points": [[1, 2]], "step_s": 60}, {"points": [["a", 2, 3, 4]], "step_s": 60}, [1, 2]):  # fmt: skip
        assert forecast_view(reply, 60.0) is None, reply


def test_provisioners_are_built_from_the_section() -> None:
    config = load_config_text(
        BASE + "scale: {pool: game, provisioner: {ports: 9100-9102, ready_timeout_s: 3, stop_timeout_s: 2}}\n"
    )
    assert config.scale is not None
    process = make_provisioner(config.scale.provisioner)
    assert isinstance(process, ProcessProvisioner)
    assert (process._ports, process.ready_timeout_s, process.stop_timeout_s) == ([9100, 9101, 9102], 3.0, 2.0)
    assert process.argv("scale-1", 9100)[2:] == ["proxy", "demo-backend", "--port", "9100", "--name", "scale-1"]
    config = load_config_text(
        BASE + "scale: {pool: game, provisioner: {kind: static, standby: ['127.0.0.1:9101'], check_connect: false}}\n"
    )
    assert config.scale is not None
    static = make_provisioner(config.scale.provisioner)
    assert isinstance(static, StaticProvisioner)
    assert static.standby == ["127.0.0.1:9101"] and static.check_connect is False


def _fake_runtime() -> Any:
    from proxy.core.pool import PoolState, ServerSpec

    state = PoolState("game", [ServerSpec("s1", "127.0.0.1", 9001), ServerSpec("s2", "127.0.0.1", 9002)])
    clients = {}
    for conn_id, (server, sid) in enumerate([("s1", "a"), ("s2", "b"), ("s1", None)], start=1):
        conn = SimpleNamespace(id=conn_id, key=1000 + conn_id, server=state.servers[server], pool=state)
        clients[conn_id] = SimpleNamespace(conn=conn, sid=sid, closed=False)
    listener = SimpleNamespace(settings=SimpleNamespace(mode="frames"), connections=clients)
    tcp = SimpleNamespace(settings=SimpleNamespace(mode="tcp"), connections={9: clients[1]})
    learner = SimpleNamespace(
        latest={
            "scores": [
                {"conn_id": 2, "predicted_rate": 7.5, "health": 0.25},
                {"conn_id": 1, "predicted_rate": 1.0, "health": 0.75},
            ]
        }
    )
    pools = {"game": SimpleNamespace(state=state)}
    return SimpleNamespace(
        pools=pools,
        listeners={"play": listener, "tcp": tcp},
        retired_listeners=set(),
        all_listeners=lambda: [listener, tcp],
        learner=learner,
    )


def test_fleet_lists_bound_frames_connections_with_their_scores() -> None:
    runtime = _fake_runtime()
    fleet = PoolFleet(runtime, "game")
    conns = fleet.connections()
    # The connection without a session yet and the tcp listener's connections are not listed.
    assert conns == [ConnectionView(1, 1001, "s1", 1.0), ConnectionView(2, 1002, "s2", 7.5)]
    assert fleet.health_by_server() == {"s1": 0.75, "s2": 0.25}
    runtime.learner = None
    assert [c.predicted_rate for c in fleet.connections()] == [0.0, 0.0]
    assert fleet.health_by_server() == {}


def test_fleet_placement_is_the_hash_without_the_load_cap() -> None:
    fleet = PoolFleet(_fake_runtime(), "game")
    state = fleet.state
    state.load.update(s1=100, s2=0)  # s1 far above the bounded-load cap
    keys = range(200)
    placed = [fleet.place(k) for k in keys]
    assert placed == [state.balancer.pick(k, {}, ()) for k in keys]
    assert {"s1", "s2"} == set(placed)
    state.set_admin_state("s1", AdminState.DRAIN)  # draining: out of placement
    assert {fleet.place(k) for k in keys} == {"s2"}
