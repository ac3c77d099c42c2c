"""Pools and servers: admin state, health and placement (sans-IO).

HAProxy's operator model: a *pool* (HAProxy "backend") holds *servers*.  Each server has an admin
state set by the operator (READY, DRAIN, MAINT) beside a health state set by checks (UP, DOWN).  A
server takes new connections only when READY and UP; DRAIN and MAINT keep existing connections.

The balancer's membership is exactly the set of eligible servers, kept in step on every admin or
health change.  With the consistent balancer that is MementoHash's arbitrary removal: a server that
goes down or is drained moves only its own keys, and its return restores them.

Active-connection counts live in one dict per pool (``load``), which the bounded-load balancer reads
directly; it is the single source of truth for "active".
"""

from __future__ import annotations

import enum
from collections.abc import Container, Iterable
from dataclasses import dataclass

from proxy.core.balancers import make_balancer
from proxy.core.health import Health, HealthTracker


class AdminState(enum.Enum):
    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What the configuration says about one server."""

    name: str
    host: str
    port: int
    requires: tuple[str, ...] = ()
    state: AdminState = AdminState.READY


class ServerState:
    """Live state of one server.  Counters are plain ints, summed over closed connections."""

    __slots__ = (
        "acks_total",
        "admin",
        "bytes_in_total",
        "bytes_out_total",
        "connect_failures_total",
        "conns_total",
        "frames_total",
        "health",
        "host",
        "name",
        "pool_name",
        "port",
        "requires",
        "retired",
    )

    def __init__(self, spec: ServerSpec, pool_name: str, rise: int, fall: int) -> None:
        self.name = spec.name
        self.pool_name = pool_name
        self.host = spec.host
        self.port = spec.port
        self.requires = spec.requires
        self.admin = spec.state
        self.health = HealthTracker(rise, fall)
        self.conns_total = 0
        self.frames_total = 0  # client frames forwarded to it (frames mode), live connections included
        self.acks_total = 0  # ack envelopes sent to it (frames mode, pools with send_acks)
        self.connect_failures_total = 0
        self.bytes_in_total = 0  # client -> server, closed connections
        self.bytes_out_total = 0  # server -> client, closed connections
        self.retired = False  # removed from the configuration; kept while connections finish

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def eligible(self) -> bool:
        return self.admin is AdminState.READY and self.health.state is Health.UP and not self.retired


class PoolState:
    """One pool: its servers, their admin/health state and the balancer over the eligible ones."""

    def __init__(
        self,
        name: str,
        servers: Iterable[ServerSpec],
        *,
        balance: str = "consistent",
        balance_factor: float = 1.25,
        rise: int = 2,
        fall: int = 3,
    ) -> None:
        self.name = name
        self.balance = balance
        self.balance_factor = balance_factor
        self.rise = rise
        self.fall = fall
        self.balancer = make_balancer(balance, balance_factor=balance_factor)
        self.servers: dict[str, ServerState] = {}
        self.load: dict[str, int] = {}
        for spec in servers:
            self._add_server(spec)

    # -- placement -------------------------------------------------------------------------------

    def pick(self, key: int, exclude: Container[str] = ()) -> ServerState | None:
        """Choose a server for a new connection hashed to ``key``; None when none is eligible."""
        name = self.balancer.pick(key, self.load, exclude)
        return None if name is None else self.servers[name]

    def acquire(self, server: ServerState) -> None:
        self.load[server.name] += 1
        server.conns_total += 1

    def release(self, server: ServerState, bytes_in: int, bytes_out: int) -> None:
        self.load[server.name] -= 1
        server.bytes_in_total += bytes_in
        server.bytes_out_total += bytes_out
        if server.retired and self.load[server.name] == 0 and self.servers.get(server.name) is server:
            del self.servers[server.name]
            del self.load[server.name]

    def active(self, server: ServerState) -> int:
        return self.load.get(server.name, 0)

    # -- state changes ---------------------------------------------------------------------------

    def set_admin_state(self, name: str, state: AdminState) -> bool:
        """Operator change; returns True when the state changed.  KeyError for unknown servers."""
        server = self.servers[name]
        if server.retired:
            raise KeyError(name)
        if server.admin is state:
            return False
        server.admin = state
        self._sync_membership(server)
        return True

    def observe_health(self, name: str, ok: bool, error: str | None = None) -> bool:
        """Active check result or passive observation; returns True when health changed."""
        server = self.servers.get(name)
        if server is None or server.retired:
            return False
        if not ok and error is not None and error.startswith("connect"):
            server.connect_failures_total += 1
        changed = server.health.observe(ok, error)
        if changed:
            self._sync_membership(server)
        return changed

    def reconfigure(
        self,
        servers: Iterable[ServerSpec],
        *,
        balance: str,
        balance_factor: float,
        rise: int,
        fall: int,
        keep_runtime_state: bool = True,
    ) -> None:
        """Apply a new server list (reload) without disturbing servers that did not change.

        A server whose address changed is a new server.  Removed servers are retired: they leave the
        balancer at once and disappear when their last connection ends.  Runtime admin-state changes
        made through the admin API survive a reload for servers that still exist.
        """
        specs = list(servers)
        if balance != self.balance or balance_factor != self.balance_factor:
            self.balance, self.balance_factor = balance, balance_factor
            self.balancer = make_balancer(balance, balance_factor=balance_factor)
            for server in self.servers.values():
                if server.eligible:
                    self.balancer.add(server.name)
        self.rise, self.fall = rise, fall
        wanted = {spec.name: spec for spec in specs}
        for name, server in list(self.servers.items()):
            spec = wanted.get(name)
            if spec is None or (spec.host, spec.port) != (server.host, server.port):
                self._retire(server)
        for spec in specs:
            server = self.servers.get(spec.name)
            if server is None:
                self._add_server(spec)
                continue
            server.requires = spec.requires
            server.health.rise, server.health.fall = rise, fall
            if not keep_runtime_state and server.admin is not spec.state:
                server.admin = spec.state
                self._sync_membership(server)

    def add_server(self, spec: ServerSpec) -> ServerState:
        """Add one server at run time (the scaler), as a reload adds a new one.  ValueError if the name
        is taken."""
        if spec.name in self.servers:
            raise ValueError(f"pool {self.name} already has a server {spec.name!r}")
        self._add_server(spec)
        return self.servers[spec.name]

    def remove_server(self, name: str) -> bool:
        """Remove one server at run time, as a reload removes it: it leaves placement at once and is
        forgotten when its last connection ends.  False when there is no such server."""
        server = self.servers.get(name)
        if server is None or server.retired:
            return False
        self._retire(server)
        return True

    # -- internals -------------------------------------------------------------------------------

    def _add_server(self, spec: ServerSpec) -> None:
        server = ServerState(spec, self.name, self.rise, self.fall)
        self.servers[spec.name] = server
        self.load.setdefault(spec.name, 0)
        if server.eligible:
            self.balancer.add(server.name)

    def _retire(self, server: ServerState) -> None:
        was_member = server.name in self.balancer.members
        server.retired = True
        if was_member:
            self.balancer.remove(server.name)
        if self.load.get(server.name, 0) == 0:
            del self.servers[server.name]
            self.load.pop(server.name, None)
        else:
            # Keep the name reserved until its connections end; rename so a new server of the
            # same name (address change) can take the slot at once.
            del self.servers[server.name]
            retired_name = f"{server.name}~retired~{id(server)}"
            self.load[retired_name] = self.load.pop(server.name)
            server.name = retired_name
            self.servers[retired_name] = server

    def _sync_membership(self, server: ServerState) -> None:
        member = server.name in self.balancer.members
        if server.eligible and not member:
            self.balancer.add(server.name)
        elif not server.eligible and member:
            self.balancer.remove(server.name)
