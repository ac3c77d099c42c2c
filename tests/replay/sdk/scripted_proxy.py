"""A tiny scripted "proxy" for SDK tests: one real loopback connection, envelopes in, envelopes out."""

from __future__ import annotations

import asyncio
from typing import Any

from replay.envelope import BackendEnvelope, decode_from_backend, encode_frame
from replay.frames import FrameDecoder

DEADLINE_S = 5.0  # a bound against hangs, not a timing assertion


class ScriptedProxy:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.pending: list[BackendEnvelope] = []

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> ScriptedProxy:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    def send(self, *envelopes: Any) -> None:
        self.writer.write(b"".join(encode_frame(e) for e in envelopes))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self) -> BackendEnvelope:
        """The next envelope; raises EOFError if the backend closed the connection first."""
        async with asyncio.timeout(DEADLINE_S):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("backend closed the connection")
                self.pending += [decode_from_backend(f) for f in self.decoder.feed(data)]
        return self.pending.pop(0)

    async def recv_n(self, n: int) -> list[BackendEnvelope]:
        return [await self.recv() for _ in range(n)]

    async def closed(self) -> list[BackendEnvelope]:
        """Read until the backend closes the connection; return what arrived before."""
        out = []
        while True:
            try:
                out.append(await self.recv())
            except EOFError:
                return out

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
