"""``POST /scale`` and ``GET /scaling`` on a real proxy, with a static standby list of live servers."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.conf import load_config_text
from tests.support import Backend, config_text, running_proxy

AUTH = {"Authorization": "Bearer secret"}


def scaled_config(configured: Backend, standby: list[Backend], extra: str = "") -> str:
    addresses = ", ".join(f"'{b.address}'" for b in standby)
    return config_text([configured.address]) + (
        "scale:\n"
        "  pool: game\n"
        "  step_s: 3600\n"  # no step of its own during the test: the test decides when
        "  max_servers: 3\n"
        f"  provisioner: {{kind: static, standby: [{addresses}]}}\n" + extra
    )


async def test_scaling_routes_are_404_without_a_scale_section() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address])) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with http.get("/scaling") as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"
        async with http.post("/scale", json={"target_capacity": 2}, headers=AUTH) as r:
            assert r.status == 404 and "scale section" in (await r.json())["message"]
        async with http.post("/scale", json={"target_capacity": 2}) as r:
            assert r.status == 401
        assert rt.scaling is None and rt.scaling_status() is None
    await b.stop()


async def test_scale_out_and_in_through_the_admin_api() -> None:
    configured = await Backend("s1").start()
    standby = [await Backend("spare-a").start(), await Backend("spare-b").start()]
    async with running_proxy(scaled_config(configured, standby)) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        scaling = rt.scaling
        await scaling.wait_until(lambda: scaling.running)
        async with http.get("/scaling") as r:
            assert r.status == 200
            status = await r.json()
        assert status["pool"] == "game" and status["running"] is True
        assert status["managed_servers"] == {"s1": "ready"}  # the configured server is the scaler's
        assert status["provisioner"] == {"kind": "static", "running": {}}
        assert status["manual_target"] is None and status["forecast_only"] is False

        # Bad requests change nothing.
        async with http.post("/scale", json={"target_capacity": 2}) as r:
            assert r.status == 401
        for body in ({}, {"target_capacity": "2"}, {"target_capacity": True}, {"target_capacity": -1},
                     {"target_capacity": 2.5}, {"target_capacity": 2, "now": True}, [2]):  # fmt: skip
            async with http.post("/scale", json=body, headers=AUTH) as r:
                assert r.status == 400, body
                assert (await r.json())["error"] == "bad_request"
        async with http.post("/scale", data=b"{not json", headers=AUTH) as r:
            assert r.status == 400
        assert rt.scaling_status()["manual_target"] is None

        # Scale out: decided at once, the standby server joins the pool as a READY server.
        async with http.post("/scale", json={"target_capacity": 2}, headers=AUTH) as r:
            assert r.status == 200
            body = await r.json()
        assert body["target_capacity"] == 2
        assert [a["action"] for a in body["actions"]] == ["provision"] and body["actions"][0]["count"] == 1
        await scaling.scaler.wait_provisioned()
        state = rt.pools["game"].state
        assert state.servers["scale-1"].address == standby[0].address and state.servers["scale-1"].eligible
        async with http.get("/backends") as r:
            names = [s["name"] for s in (await r.json())["pools"][0]["servers"]]
        assert names == ["s1", "scale-1"]
        async with http.get("/scaling") as r:
            status = await r.json()
        assert status["manual_target"] == 2 and status["mode"] == "manual"
        assert status["managed_servers"] == {"s1": "ready", "scale-1": "ready"}
        assert status["provisioner"]["running"] == {"scale-1": standby[0].address}
        assert status["decisions"][0]["reason"] == "manual target 2 > 1 servers"

        # A reload that changes the pool keeps the servers the scaler started.
        text = scaled_config(configured, standby)
        result = await rt.reload(load_config_text(text.replace("health_check: {enabled: false}", "health_check: {enabled: false}\n    hash_balance_factor: 1.5")))
        assert result.ok and result.changes == ("pool game updated",)
        assert state.servers["scale-1"].eligible and state.balance_factor == 1.5
        result = await rt.reload(load_config_text(text.replace("max_servers: 3", "max_servers: 4")))
        assert result.ok and result.changes == ("pool game updated", "scale settings: take effect on restart")
        assert state.servers["scale-1"].eligible and state.balance_factor == 1.25

        # A target above max_servers is held there.
        async with http.post("/scale", json={"target_capacity": 50}, headers=AUTH) as r:
            assert (await r.json())["target_capacity"] == 3
        await scaling.scaler.wait_provisioned()
        assert state.servers["scale-2"].address == standby[1].address

        # Scale in: the least loaded servers are drained, then stopped at the next step.
        async with http.post("/scale", json={"target_capacity": 1}, headers=AUTH) as r:
            body = await r.json()
        # (scale-2 became ready since the last step: it first gets the connections hashing gives it)
        assert [a["action"] for a in body["actions"]] == ["migrate", "drain", "migrate"]
        assert body["actions"][0]["onto"] == ["scale-2"]
        drained = body["actions"][1]["names"]
        assert len(drained) == 2
        assert all(state.servers[n].admin.value == "drain" for n in drained)
        await scaling.step()
        await scaling.scaler.wait_idle()
        status = rt.scaling_status()
        assert len(status["managed_servers"]) == 1
        for name in drained:
            if name.startswith("scale-"):
                assert name not in state.servers  # stopped and removed
            else:
                assert state.servers[name].admin.value == "drain"  # a configured server stays, drained
        assert set(status["provisioner"]["running"]) <= {"scale-1", "scale-2"} - set(drained)

        # null resumes automatic scaling.
        async with http.post("/scale", json={"target_capacity": None}, headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["target_capacity"] is None
        assert rt.scaling_status()["manual_target"] is None
    for b in (configured, *standby):
        await b.stop()


async def test_forecast_only_records_without_acting() -> None:
    configured = await Backend("s1").start()
    spare = await Backend("spare").start()
    config = scaled_config(configured, [spare], "  forecast_only: true\n")
    async with running_proxy(config) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        await rt.scaling.wait_until(lambda: rt.scaling.running)
        async with http.post("/scale", json={"target_capacity": 2}, headers=AUTH) as r:
            body = await r.json()
        assert body["actions"] == []
        async with http.get("/scaling") as r:
            status = await r.json()
        assert status["forecast_only"] is True
        [decision] = status["decisions"]
        assert decision["acted"] is False and decision["desired"] == 2
        assert [a["action"] for a in decision["actions"]] == ["provision"]
        assert list(rt.pools["game"].state.servers) == ["s1"]
        async with http.get("/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
        phases = {s.labels["phase"]: s.value for s in families["ferryman_scale_servers"].samples}
        assert phases == {"provisioning": 0, "ready": 1, "draining": 0}
        assert families["ferryman_scale_desired_servers"].samples[0].value == 2
        assert families["ferryman_scale_lead_time_seconds"].samples[0].value == 120
        assert families["ferryman_scale_migrations"].type == "counter"  # the parser strips _total
        assert families["ferryman_server_frames"].samples[0].labels == {"pool": "game", "server": "s1"}
    await configured.stop()
    await spare.stop()


async def test_a_server_that_fails_to_start_is_reported_and_the_proxy_keeps_serving() -> None:
    configured = await Backend("s1").start()
    config = config_text([configured.address]) + (
        "scale:\n"
        "  pool: game\n"
        "  step_s: 3600\n"
        "  provisioner: {command: ['{python}', '-c', 'raise SystemExit(3)', '{port}'], ready_timeout_s: 10}\n"
    )
    async with running_proxy(config) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        await rt.scaling.wait_until(lambda: rt.scaling.running)
        async with http.post("/scale", json={"target_capacity": 2}, headers=AUTH) as r:
            assert r.status == 200
        await rt.scaling.scaler.wait_provisioned()
        async with http.get("/scaling") as r:
            status = await r.json()
        assert status["provision_failures_total"] == 1
        assert status["managed_servers"] == {"s1": "ready"} and status["provisioner"]["running"] == {}
        assert list(rt.pools["game"].state.servers) == ["s1"]
        assert "exited with status 3" in rt.log.stream.getvalue()
        async with http.get("/readyz") as r:
            assert r.status == 200
    await configured.stop()
