"""``python -m model.learner``: the learner process the proxy starts and supervises.

Reads length-prefixed msgpack snapshots on stdin (one per proxy tick), writes metric rows to the
SQLite time-series store, rolls up complete minutes, grooms by retention, updates the online models
and writes its latest scores and forecast back on stdout after every snapshot.  Exits 0 at EOF
(the proxy is stopping) after a final rollup.  Runs in its own process so neither SQLite nor river
can stall the data plane.
"""

from __future__ import annotations

import argparse
import struct
import sys
from typing import Any, BinaryIO

import msgpack

from model.learner.collector import Collector
from model.learner.engine import Engine

_LEN = struct.Struct("!I")
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


def read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = _LEN.unpack(head)
    if length > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"snapshot of {length} bytes exceeds {MAX_SNAPSHOT_BYTES}")
    body = stream.read(length)
    if len(body) < length:
        return None
    return body


def write_frame(stream: BinaryIO, obj: Any) -> None:
    body = msgpack.packb(obj, use_bin_type=True)
    stream.write(_LEN.pack(len(body)) + body)
    stream.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.learner")
    p.add_argument("--db", required=True)
    p.add_argument("--interval-s", type=int, default=1)
    p.add_argument("--time-zone", default="UTC")
    p.add_argument("--lateness-s", type=float, default=5.0)
    p.add_argument("--retention", default="7,3,32,90,90", help="raw,minute,hour,day,session days")
    p.add_argument("--tick-s", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-scored-connections", type=int, default=100_000, help="model state is bounded by this")
    p.add_argument("--no-models", action="store_true", help="store metrics only; no forecasts or scores")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    engine = Engine.open(args)
    collector = Collector()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            body = read_frame(stdin)
            if body is None:
                break
            snapshot = msgpack.unpackb(body, raw=False)
            rows = collector.ingest(snapshot)
            write_frame(stdout, engine.tick(rows))
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
