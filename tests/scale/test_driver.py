"""The scaler driver with a real static provisioner (live sockets) and an in-memory pool."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterable

import orjson
import pytest

from proxy.core.hashing import jump_hash
from proxy.logs import Logger
from proxy.scale.core import ConnectionView, ForecastView, Migrate, Phase, Provision, ScaleSettings
from proxy.scale.driver import Scaler
from proxy.scale.provisioners import ProcessProvisioner, StaticProvisioner

SETTINGS = ScaleSettings(
    capacity=100.0,
    target_utilization=1.0,
    max_servers=5,
    initial_lead_time_s=60.0,
    migrations_per_s=2.0,
    scale_in_stabilization_s=0.0,
    scale_in_cooldown_s=0.0,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class MemoryFleet:
    """A pool in memory: jump-hash placement over the ready servers, migrations recorded."""

    def __init__(self, servers: list[str], conns: list[ConnectionView]) -> None:
        self.order = list(servers)
        self.addresses: dict[str, str] = {}
        self.draining: set[str] = set()
        self.removed: list[str] = []
        self.conns = {c.conn_id: c for c in conns}
        self.migrated: list[tuple[int | str, str]] = []

    def add_server(self, name: str, address: str) -> None:
        self.order.append(name)
        self.addresses[name] = address

    def set_draining(self, name: str) -> None:
        self.draining.add(name)

    def remove_server(self, name: str) -> None:
        self.removed.append(name)
        self.order.remove(name)

    def connections(self) -> Iterable[ConnectionView]:
        return list(self.conns.values())

    def place(self, key: int) -> str | None:
        eligible = [n for n in self.order if n not in self.draining]
        return eligible[jump_hash(key, len(eligible))] if eligible else None

    async def migrate(self, conn_id: int | str, target: str) -> bool:
        c = self.conns[conn_id]
        self.conns[conn_id] = ConnectionView(c.conn_id, c.key, target, c.predicted_rate)
        self.migrated.append((conn_id, target))
        return True


def forecast(hi: float) -> ForecastView:
    return ForecastView(tuple((i * 60.0, hi / 2, hi, hi) for i in range(1, 4)), True, 60.0, "scripted")


@pytest.fixture
async def standby() -> AsyncIterator[list[str]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", 0) for _ in range(2)]
    yield [f"127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]
    for s in servers:
        s.close()
        await s.wait_closed()


async def test_scale_out_provisions_adds_and_migrates_heaviest_first_within_budget(
    standby: list[str],
) -> None:
    conns = [
        ConnectionView(i, key=i * 0x9E3779B97F4A7C15 % (1 << 64), server="base", predicted_rate=float(i))
        for i in range(40)
    ]
    fleet = MemoryFleet(["base"], conns)
    clock = FakeClock()
    async with Scaler(SETTINGS, StaticProvisioner(standby), fleet, clock=clock) as scaler:
        scaler.adopt("base")
        actions = await scaler.tick({"base": 150.0}, {"base": 40}, forecast(250.0))
        assert [type(a) for a in actions] == [Provision] and actions[0].count == 2
        await scaler.wait_provisioned()
        assert sorted(fleet.addresses.values()) == sorted(standby)
        assert all(scaler.phases[n] is Phase.READY for n in fleet.addresses)
        assert scaler.core.lead_time_s == 0.0  # measured on the fake clock: instant

        clock.now += 60.0
        actions = await scaler.tick({"base": 150.0}, {"base": 40}, forecast(250.0))
        (migrate,) = actions
        assert isinstance(migrate, Migrate) and set(migrate.onto) == set(fleet.addresses)
        assert await scaler.pump_migrations() == 2  # two a second
        await scaler.wait_idle()
        assert await scaler.pump_migrations() == 0  # no time has passed
        moving = [c for c in conns if fleet.place(c.key) != "base"]
        heaviest = sorted(moving, key=lambda c: -c.predicted_rate)[:2]
        assert [m[0] for m in fleet.migrated] == [c.conn_id for c in heaviest]
        while len(fleet.migrated) < len(moving):
            clock.now += 1.0
            assert await scaler.pump_migrations() <= 2
            await scaler.wait_idle()
        assert all(fleet.conns[c.conn_id].server == fleet.place(c.key) for c in conns)
        assert await scaler.pump_migrations() == 0
        assert scaler.status()["migrations"]["onto"] == []


async def test_failed_provisioning_is_forgotten_and_counted() -> None:
    fleet = MemoryFleet(["base"], [])
    out = io.StringIO()
    async with Scaler(
        SETTINGS, StaticProvisioner([]), fleet, clock=FakeClock(), logger=Logger("info", out)
    ) as scaler:
        scaler.adopt("base")
        await scaler.tick({"base": 150.0}, None, forecast(150.0))
        await scaler.wait_provisioned()
        assert scaler.phases == {"base": Phase.READY}
        assert scaler.status()["provision_failures_total"] == 1
        assert fleet.addresses == {}
    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["scaling_decided", "scale_out_ordered", "provision_failed"]
    assert events[0]["clock_s"] == 100.0 and events[0]["actions"][0]["count"] == 1
    assert "exhausted" in events[2]["error"]


async def test_manual_scale_in_drains_migrates_off_and_stops(standby: list[str]) -> None:
    conns = [ConnectionView(i, key=i * 7919, server="b", predicted_rate=1.0) for i in range(3)]
    fleet = MemoryFleet(["a", "b"], conns)
    static = StaticProvisioner([], check_connect=False)
    clock = FakeClock()
    async with Scaler(SETTINGS, static, fleet, clock=clock) as scaler:
        scaler.adopt("a")
        scaler.adopt("b")
        assert (await scaler.scale_servers(1))["target_capacity"] == 1
        actions = await scaler.tick({"a": 10.0, "b": 10.0}, {"a": 0, "b": 3}, forecast(20.0))
        assert [type(a).__name__ for a in actions] == ["Drain", "Migrate"]
        assert fleet.draining == {"a"}  # the one without connections
        clock.now += 1.0
        assert await scaler.pump_migrations() == 0  # nothing on a
        clock.now += 60.0
        actions = await scaler.tick({"b": 20.0}, {"a": 0, "b": 3}, forecast(20.0))
        assert [type(a).__name__ for a in actions] == ["Stop"]
        await scaler.wait_idle()
        assert fleet.removed == ["a"] and "a" not in scaler.phases
        data = orjson.loads(orjson.dumps(scaler.status()))
        assert data["manual_target"] == 1 and data["managed_servers"] == {"b": "ready"}


async def test_tick_outside_the_context_is_refused() -> None:
    scaler = Scaler(SETTINGS, StaticProvisioner([]), MemoryFleet([], []), clock=FakeClock())
    with pytest.raises(RuntimeError, match="async with"):
        await scaler.tick({}, None, None)  # below min_servers: wants to provision


async def test_leaving_the_scaler_cancels_provisioning_and_leaves_no_process() -> None:
    never_listens = ProcessProvisioner(
        ["{python}", "-c", "import time; time.sleep(120)", "{port}"], ready_timeout_s=60.0
    )
    fleet = MemoryFleet(["base"], [])
    async with Scaler(SETTINGS, never_listens, fleet, clock=FakeClock()) as scaler:
        scaler.adopt("base")
        (prov,) = await scaler.tick({"base": 300.0}, None, forecast(300.0))
        assert prov.count == 2
        await asyncio.sleep(0)  # let the provisioning tasks begin
    assert never_listens.running() == {}
    assert fleet.addresses == {}


class SlowFleet(MemoryFleet):
    """Migrations wait for ``release``: several pumps happen while they are in flight."""

    def __init__(self, servers: list[str], conns: list[ConnectionView]) -> None:
        super().__init__(servers, conns)
        self.release = asyncio.Event()
        self.started: list[int | str] = []

    async def migrate(self, conn_id: int | str, target: str) -> bool:
        self.started.append(conn_id)
        await self.release.wait()
        return await super().migrate(conn_id, target)


async def test_a_connection_in_flight_is_never_migrated_twice() -> None:
    conns = [ConnectionView(i, key=i, server="a", predicted_rate=float(i)) for i in range(6)]
    fleet = SlowFleet(["a", "b"], conns)
    clock = FakeClock()
    async with Scaler(SETTINGS, StaticProvisioner([]), fleet, clock=clock) as scaler:
        scaler.adopt("a")
        scaler.adopt("b")
        await scaler.scale_servers(1)
        # The core drains the server reporting the fewest connections: say a, so its six move to b.
        actions = await scaler.tick({"a": 0.0, "b": 10.0}, {"a": 0, "b": 1}, forecast(10.0))
        assert [type(a).__name__ for a in actions] == ["Drain", "Migrate"] and fleet.draining == {"a"}
        started = 0
        for _ in range(5):  # five pumps a second apart while nothing completes
            started += await scaler.pump_migrations()
            await asyncio.sleep(0)  # let the started migrations reach their wait
            clock.now += 1.0
        assert started == 6 and sorted(fleet.started) == list(range(6))
        assert fleet.started[:2] == [5, 4]  # heaviest first, two a second
        fleet.release.set()
        await scaler.wait_idle()
        assert all(c.server == "b" for c in fleet.conns.values())
        assert scaler.status()["migrations"]["total"] == 6
