"""Frames cut anywhere: the compiled steady-state path hands over to the Python decoder mid-read and
back, in both directions, and nothing is lost, duplicated or reordered.

The backend here is a bare envelope server written against the protocol (docs/protocol.md), not the
SDK, so that it can cut its output at arbitrary byte offsets and mix plain replies with replies that
carry deltas (which the compiled path leaves to Python) in the same write.
"""

from __future__ import annotations

import asyncio
import random
import struct

import msgpack
import pytest

from replay.canonical import digest
from replay.frames import FrameDecoder
from tests.net.frames_support import LoopbackServer, frames_config
from tests.support import running_proxy

pytestmark = pytest.mark.usefixtures("frames_path")  # compiled and Python steady-state paths

FRAMES = 300
WINDOW = 8


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class ChoppyBackend(LoopbackServer):
    """Answers every ``req`` with a ``res`` of the same body; every third one also reports a delta to
    partition ``game``.  Its output goes out in random pieces (1 to 40 bytes), yielding in between."""

    name = "s1"

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.game_version = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(max_frame_bytes=1 << 24)
        out = bytearray()
        try:
            while data := await reader.read(65536):
                for payload in decoder.feed(data):
                    m = msgpack.unpackb(payload)
                    if m["t"] == "attach":
                        digests = {name: digest(state["data"]) for name, state in m["state"].items()}
                        out += _frame(msgpack.packb({"t": "attached", "sid": m["sid"], "epoch": m["epoch"], "digests": digests}))
                    elif m["t"] == "req":
                        res = {"t": "res", "seq": m["seq"], "body": m["body"]}
                        if m["seq"] % 3 == 0:
                            self.game_version += 1
                            res["deltas"] = {"game": {"v": self.game_version, "set": {"last": m["seq"]}}}
                        out += _frame(msgpack.packb(res))
                # Replies go out in pieces, each written on its own, so the proxy reads partial
                # envelopes and several at once.
                while out:
                    cut = self.rng.randint(1, 40)
                    writer.write(bytes(out[:cut]))
                    del out[:cut]
                    await writer.drain()
                    await asyncio.sleep(0)
        finally:
            writer.close()


async def test_frames_cut_at_any_byte_arrive_whole_and_in_order() -> None:
    backend = await ChoppyBackend(seed=7).start()
    rng = random.Random(11)
    async with running_proxy(frames_config([backend])) as rt:
        reader, writer = await asyncio.open_connection(*rt.listener_address("play"))
        bodies = [msgpack.packb({"sid": "chunky"})] + [
            rng.randbytes(rng.choice([0, 1, 5, 64, 300])) for _ in range(FRAMES - 1)
        ]  # fmt: skip
        replies: list[bytes] = []
        decoder = FrameDecoder()

        async def receive(n: int) -> None:
            while len(replies) < n:
                data = await reader.read(65536)
                assert data, "the proxy closed the connection"
                replies.extend(decoder.feed(data))

        sent = 0
        while sent < FRAMES:
            # Up to WINDOW frames in flight, their bytes cut at random offsets across writes.
            batch = b"".join(_frame(b) for b in bodies[sent : min(FRAMES, len(replies) + WINDOW)])
            sent = min(FRAMES, len(replies) + WINDOW)
            while batch:
                cut = rng.randint(1, 50)
                writer.write(batch[:cut])
                batch = batch[cut:]
                await writer.drain()
                await asyncio.sleep(0)
            async with asyncio.timeout(10):
                await receive(max(len(replies) + 1, sent - WINDOW // 2))
        async with asyncio.timeout(10):
            await receive(FRAMES)
        assert replies == bodies  # each frame answered once, in order, byte for byte
        game = rt.store.get_partition_data("chunky", "game")
        assert game is not None and game.version == FRAMES // 3 and game.data == {"last": FRAMES // 3 * 3}
        (conn,) = rt.connections()
        assert conn["frames_in"] == FRAMES
        writer.close()
    await backend.stop()
