"""Admin API on a real proxy: routes, auth, errors, Prometheus text, reload and drain."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Backend, config_text, connect, roundtrip, running_proxy

AUTH = {"Authorization": "Bearer secret"}


async def test_health_stats_config_backends() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address])) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with http.get("/livez") as r:
            assert r.status == 200 and (await r.json()) == {"status": "ok"}
        async with http.get("/readyz") as r:
            assert r.status == 200
        reader, writer = await connect(rt)
        await roundtrip(reader, writer, b"x")
        async with http.get("/stats") as r:
            stats = await r.json()
        assert stats["listeners"]["front"]["active_connections"] == 1
        assert stats["listeners"]["front"]["bytes_in_total"] == 1
        async with http.get("/config") as r:
            cfg = await r.json()
        assert cfg["admin"]["token"] == "***" and cfg["pools"][0]["name"] == "game"
        async with http.get("/backends") as r:
            [pool] = (await r.json())["pools"]
        assert pool["servers"][0]["active_connections"] == 1
        async with http.get("/connections") as r:
            body = await r.json()
        assert body["total"] == 1
        conn_id = body["connections"][0]["id"]
        async with http.get(f"/connections/{conn_id}") as r:
            assert (await r.json())["server"] == "s1"
        async with http.get("/connections/999999") as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"
        async with http.get("/connections/abc") as r:
            assert r.status == 400
        writer.close()
    await b.stop()


async def test_metrics_parse_as_prometheus_text() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address])) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        reader, writer = await connect(rt)
        await roundtrip(reader, writer, b"abc")
        async with http.get("/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        # The parser strips _total from counter family names.
        assert families["ferryman_listener_connections"].type == "counter"
        assert families["ferryman_listener_active_connections"].samples[0].value == 1
        sent = families["ferryman_listener_received_bytes"].samples[0]
        assert sent.labels == {"listener": "front"} and sent.value == 3
        for family in families.values():
            assert family.name.startswith("ferryman_")
            for sample in family.samples:
                assert set(sample.labels) <= {
                    "listener", "pool", "server", "status", "state", "result", "version", "outcome", "phase", "kind"
                }  # fmt: skip
        writer.close()
    await b.stop()


async def test_mutations_need_the_bearer_token_and_valid_bodies() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address])) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        url = "/backends/game/s1/state"
        async with http.post(url, json={"state": "drain"}) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.post(url, json={"state": "drain"}, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with http.get(url) as r:
            assert r.status == 405 and (await r.json())["error"] == "method_not_allowed"
        async with http.post(url, data=b"{not json", headers=AUTH) as r:
            assert r.status == 400 and "JSON" in (await r.json())["message"]
        async with http.post(url, json={"state": "sleepy"}, headers=AUTH) as r:
            assert r.status == 400
        async with http.post(url, json=["drain"], headers=AUTH) as r:
            assert r.status == 400
        async with http.post("/backends/game/nope/state", json={"state": "drain"}, headers=AUTH) as r:
            assert r.status == 404
        async with http.post("/backends/nope/s1/state", json={"state": "drain"}, headers=AUTH) as r:
            assert r.status == 404
        async with http.post(url, json={"state": "maint"}, headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["changed"] is True
        assert rt.describe_pool("game")["servers"][0]["state"] == "maint"
        reader, _writer = await connect(rt)
        assert await reader.read() == b""  # no eligible server left
        async with http.get("/no/such/route") as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"
        async with http.post(url, data=b"x" * 100_000, headers=AUTH) as r:
            assert r.status == 413
    await b.stop()


async def test_mutations_refused_without_configured_token() -> None:
    b = await Backend("b").start()
    text = config_text([b.address], admin="admin: {bind: '127.0.0.1:0'}")
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with http.post("/reload", headers=AUTH) as r:
            assert r.status == 403
    await b.stop()


async def test_reload_applies_valid_and_keeps_old_on_invalid(tmp_path) -> None:
    b1 = await Backend("b1").start()
    b2 = await Backend("b2").start()
    path = tmp_path / "ferryman.yaml"
    path.write_text(config_text([b1.address]))
    async with running_proxy(path.read_text(), path=str(path)) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        old_port = rt.listener_address("front")
        reader, writer = await connect(rt)
        assert await roundtrip(reader, writer, b"x") == b"b1: x"
        path.write_text(config_text([b1.address, b2.address]))
        async with http.post("/reload", headers=AUTH) as r:
            body = await r.json()
            assert r.status == 200 and body["ok"] and "pool game updated" in body["changes"]
        assert [s["name"] for s in rt.describe_pool("game")["servers"]] == ["s1", "s2"]
        assert rt.listener_address("front") == old_port  # unchanged listener kept its socket
        assert await roundtrip(reader, writer, b"y") == b"b1: y"  # open connection untouched
        path.write_text(config_text([b1.address]).replace("mode: tcp", "mode: tcpp").replace("tick_s", "tick_ss"))
        async with http.post("/reload", headers=AUTH) as r:
            body = await r.json()
        assert r.status == 422 and not body["ok"]
        assert len(body["errors"]) >= 2 and all(e.startswith(str(path)) for e in body["errors"])
        assert len(rt.describe_pool("game")["servers"]) == 2  # old config kept
        async with http.get("/stats") as r:
            assert (await r.json())["reloads"] == {
                "success_total": 1, "failure_total": 1, "last_ok": False, "last_errors": body["errors"],
            }
        writer.close()
    await b1.stop()
    await b2.stop()


async def test_drain_fails_readiness_then_finishes_connections() -> None:
    b = await Backend("b").start()
    text = config_text([b.address], global_="drain_timeout_s: 10")
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        reader, writer = await connect(rt)
        assert await roundtrip(reader, writer, b"before") == b"b: before"
        async with http.post("/drain", headers=AUTH) as r:
            assert r.status == 202
        async with http.get("/readyz") as r:
            assert r.status == 503 and (await r.json())["reason"] == "draining"
        host, port = rt.listener_address("front")
        try:
            _, w2 = await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            pass  # listener closed: new clients go elsewhere
        else:
            w2.close()
            raise AssertionError("listener still accepting during drain")
        assert await roundtrip(reader, writer, b"during") == b"b: during"  # existing one keeps working
        writer.close()
    await b.stop()
