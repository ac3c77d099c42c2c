"""Session partitions over the admin API, backed by the durable store, across a proxy restart."""

from __future__ import annotations

import aiohttp

from tests.support import Backend, config_text, running_proxy

AUTH = {"Authorization": "Bearer secret"}


async def test_put_get_partitions_and_recover_after_restart(tmp_path) -> None:
    b = await Backend("b").start()
    text = config_text([b.address]) + f"store: {{kind: local, directory: '{tmp_path / 'state'}', fsync: always}}\n"
    url = "/sessions/s-1/partitions"
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with http.get(url) as r:
            assert r.status == 404
        async with http.put(f"{url}/auth", json={"data": {"user": "ann"}}) as r:
            assert r.status == 401
        async with http.put(f"{url}/auth", json={"data": {"user": "ann"}}, headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["version"] == 1
        async with http.put(f"{url}/auth", json={"data": {"user": "bob", "n": [1, 2]}}, headers=AUTH) as r:
            assert (await r.json())["version"] == 2
        async with http.put(f"{url}/cart", json={"data": {"items": []}}, headers=AUTH) as r:
            assert r.status == 200
        async with http.put(f"{url}/cart", json={"items": []}, headers=AUTH) as r:
            assert r.status == 400
        async with http.put(f"{url}/bad%20name", json={"data": {}}, headers=AUTH) as r:
            assert r.status == 400
        async with http.get(url) as r:
            listing = await r.json()
        assert [p["name"] for p in listing["partitions"]] == ["auth", "cart"]
        assert rt.store.get_partition_data("s-1", "auth").version == 2
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with http.get(f"{url}/auth") as r:
            body = await r.json()
        assert body["version"] == 2 and body["data"] == {"user": "bob", "n": [1, 2]}
        async with http.get(f"{url}/game") as r:
            assert r.status == 404
    await b.stop()


async def test_session_routes_say_when_the_store_is_off() -> None:
    b = await Backend("b").start()
    async with running_proxy(config_text([b.address])) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with http.get("/sessions/x/partitions") as r:
            assert r.status == 404 and "store is off" in (await r.json())["message"]
    await b.stop()
