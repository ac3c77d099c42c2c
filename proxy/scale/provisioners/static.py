"""``static``: a standby list of servers that already run, activated and deactivated by the scaler.

Nothing is started or stopped: ``start`` hands out the first standby address that is not in use
(checking that it accepts connections when ``check_connect`` is set, and skipping it otherwise), and
``stop`` puts it back at the end of the list.  This is how a fleet of pre-booted machines, or servers
managed by another system, is scaled: the proxy only decides which of them take traffic.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.scale.provisioners.base import ProvisionError, accepts, split_address


class StaticProvisioner:
    kind = "static"

    def __init__(
        self, standby: Iterable[str], *, check_connect: bool = True, connect_timeout_s: float = 1.0
    ) -> None:
        self._free: list[str] = []
        for address in standby:
            split_address(address)  # malformed addresses fail here, at configuration time
            if address not in self._free:
                self._free.append(address)
        self._used: dict[str, str] = {}
        self.check_connect = check_connect
        self.connect_timeout_s = connect_timeout_s

    @property
    def standby(self) -> list[str]:
        return list(self._free)

    async def start(self, name: str) -> str:
        if name in self._used:
            raise ProvisionError(f"{name} is already active at {self._used[name]}")
        refused: list[str] = []
        try:
            # Take an address off the list before checking it: concurrent starts must not share one.
            while self._free:
                address = self._free.pop(0)
                try:
                    ok = not self.check_connect or await accepts(address, self.connect_timeout_s)
                except BaseException:
                    self._free.insert(0, address)  # cancelled mid-check: it was never handed out
                    raise
                if not ok:
                    refused.append(address)
                    continue
                self._used[name] = address
                return address
        finally:
            self._free.extend(refused)  # refused now, perhaps up later: back at the end of the list
        if refused:
            raise ProvisionError(f"no standby server accepts connections (tried {', '.join(refused)})")
        raise ProvisionError("the standby list is exhausted")

    async def stop(self, name: str) -> None:
        address = self._used.pop(name, None)
        if address is not None:
            self._free.append(address)

    async def ready(self, name: str) -> bool:
        address = self._used.get(name)
        return address is not None and await accepts(address, self.connect_timeout_s)

    def running(self) -> dict[str, str]:
        return dict(self._used)

    async def aclose(self) -> None:
        for name in list(self._used):
            await self.stop(name)
