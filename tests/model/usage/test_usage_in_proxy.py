"""``usage.schedule: true``: the proxy runs the daily job itself, catching up on a missed day."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import pathlib

import aiohttp
import orjson

from model.usage.files import stats_path
from tests.model.usage.helpers import line, write_log
from tests.support import Backend, config_text, running_proxy


async def _wait_for(rt, event: str) -> dict:
    events = rt.usage_events
    async with asyncio.timeout(30):
        while event not in events.last:
            events.changed.clear()
            await events.changed.wait()
    return events.last[event]


async def test_the_proxy_runs_the_missed_day_and_reports_it(tmp_path: pathlib.Path) -> None:
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    day = yesterday.isoformat()
    log = write_log(
        tmp_path / "access.log",
        [
            line(f"{day}T10:00:00", ip="10.0.0.1", session="a", bytes_in=10),
            line(f"{day}T10:05:00", ip="10.0.0.1", session="a", bytes_in=20),
            line(f"{day}T23:59:00", ip="10.0.0.2", session="b", bytes_in=5),
        ],
    )
    out = tmp_path / "usage"
    b = await Backend("b").start()
    text = config_text([b.address], global_=f"access_log: '{log}'")
    text += f"usage: {{schedule: true, output_dir: '{out}', time_zone: UTC}}\n"
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        done = await _wait_for(rt, "usage_daily_done")
        # Session b may still be going at midnight: it is carried into today and counted when it ends.
        assert done["date"] == day and done["lines"] == 3 and done["bad_lines"] == 0 and done["clients"] == 1
        scheduled = await _wait_for(rt, "usage_run_scheduled")
        assert scheduled["date"] == dt.datetime.now(dt.UTC).date().isoformat()
        async with http.get("/stats") as r:
            usage = (await r.json())["usage"]
        assert usage["usage_daily_done"]["date"] == day
    await b.stop()
    path = stats_path(out, yesterday, "ferryman")
    assert path.exists()
    assert gzip.decompress(path.read_bytes())  # a real report, not an empty file
    assert orjson.loads(orjson.dumps(done))  # the event's fields are JSON-able for /stats


async def test_an_unscheduled_usage_section_starts_no_job(tmp_path: pathlib.Path) -> None:
    b = await Backend("b").start()
    text = config_text([b.address]) + f"usage: {{schedule: false, output_dir: '{tmp_path / 'u'}'}}\n"
    async with running_proxy(text) as rt, aiohttp.ClientSession(rt.admin.url) as http:
        async with http.get("/stats") as r:
            assert (await r.json())["usage"] is None
    await b.stop()
    assert not (tmp_path / "u").exists()
