"""``python -m bench NAME [args]``: run one benchmark (each writes JSON and a markdown table to bench/results/)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "tcp": "ferryman vs HAProxy vs direct: ping-pong, bulk, connection rate, redis-benchmark",
    "forecast": "forecasters vs naive on the NASA and Twitter traces",
    "usage": "daily and monthly usage processing on a synthetic month",
    "migrate": "live migration pause, rate and replayed bytes",
    "scale": "predictive vs reactive scaling on the real traces",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench NAME [args]\n")
        for name, what in BENCHMARKS.items():
            print(f"  {name:10} {what}")
        return 0 if argv else 2
    name, args = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            print(f"benchmark {name!r} is not part of this build yet", file=sys.stderr)
            return 2
        raise
    return int(module.main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
