"""The proxy feeds a real learner process; rows reach the store and GET /series."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Backend, config_text, connect, roundtrip, running_proxy


async def test_snapshots_reach_the_store_and_series_api(tmp_path) -> None:
    b = await Backend("b").start()
    db = tmp_path / "metrics.sqlite3"
    text = config_text([b.address]) + f"metrics: {{db_path: '{db}', models: false}}\n"
    text = text.replace("tick_s: 0.05", "tick_s: 0.2")
    started = time.time()
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        assert rt.learner is not None
        async with asyncio.timeout(30):
            await rt.learner.wait_reply()  # the learner's baseline: traffic from here on is counted
        reader, writer = await connect(rt)
        for i in range(20):
            assert await roundtrip(reader, writer, b"m%d" % i) == b"b: m%d" % i
        async with asyncio.timeout(30):
            reply = await rt.learner.wait_reply()
            while reply["store"]["raw_rows_written"] == 0:
                reply = await rt.learner.wait_reply()
            # One more snapshot after the traffic, so the byte counters include all of it.
            await rt.learner.wait_reply()
            await rt.learner.wait_reply()
        params = {
            "metric": "bytes_in",
            "entity": "front",
            "from": str(int(started) - 1),
            "to": str(int(time.time()) + 2),
            "granularity": "raw",
        }
        async with http.get("/series", params=params) as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["granularity"] == "raw"
        assert sum(row["value"] for row in body["rows"]) == sum(len(b"m%d" % i) for i in range(20))
        async with http.get("/series", params={"metric": "nope", "entity": "front", "from": "0", "to": "10"}) as r:
            assert r.status in (400, 404)
        async with http.get("/series", params={"metric": "bytes_in"}) as r:
            assert r.status == 400
        writer.close()
    await b.stop()


async def test_learner_is_restarted_when_it_dies(tmp_path) -> None:
    b = await Backend("b").start()
    text = config_text([b.address]) + f"metrics: {{db_path: '{tmp_path / 'm.sqlite3'}', models: false}}\n"
    async with running_proxy(text) as rt:
        async with asyncio.timeout(30):
            await rt.learner.wait_reply()
            first = rt.learner.proc
            first.kill()
            await first.wait()
            while rt.learner.proc is None or rt.learner.proc is first:
                await rt.learner.wait_reply()
        assert rt.learner.restarts_total >= 1
    await b.stop()


async def test_learner_does_not_inherit_the_proxys_cpu_pinning(tmp_path) -> None:
    import os

    import pytest

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPUs to observe")
    before = os.sched_getaffinity(0)
    b = await Backend("b").start()
    text = config_text([b.address]) + f"metrics: {{db_path: '{tmp_path / 'm.sqlite3'}', models: false}}\n"
    os.sched_setaffinity(0, {0})  # the "proxy" (this test process) is pinned to CPU 0
    try:
        async with running_proxy(text) as rt:
            async with asyncio.timeout(30):
                await rt.learner.wait_reply()
            assert os.sched_getaffinity(rt.learner.proc.pid) == set(range(os.cpu_count()))
    finally:
        os.sched_setaffinity(0, before)
    await b.stop()


async def test_models_score_live_connections_and_forecast(tmp_path) -> None:
    b = await Backend("b").start()
    text = config_text([b.address]) + f"metrics: {{db_path: '{tmp_path / 'm.sqlite3'}', models: true}}\n"
    text = text.replace("tick_s: 0.05", "tick_s: 0.2")
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with asyncio.timeout(30):
            await rt.learner.wait_reply()
        reader, writer = await connect(rt)
        async with asyncio.timeout(30):
            reply: dict = {}
            while not reply.get("scores"):
                assert await roundtrip(reader, writer, b"ping") == b"b: ping"
                reply = await rt.learner.wait_reply()
        assert reply["scored_connections"] == 1
        (score,) = reply["scores"]
        assert score["predicted_rate"] >= 0.0 and 0.0 <= score["churn_p"] <= 1.0
        async with http.get("/scores") as r:
            body = await r.json()
            assert r.status == 200, body
            assert [s["conn_id"] for s in body["scores"]] == [score["conn_id"]]
        async with http.get("/forecast") as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["forecast"]["step_s"] == 60.0
            assert body["learner"] is not None
        async with http.get("/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
        assert families["ferryman_learner_up"].samples[0].value == 1
        assert families["ferryman_learner_scored_connections"].samples[0].value == 1
        assert "ferryman_forecast_beats_naive" in families
        writer.close()
    await b.stop()
