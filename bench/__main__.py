"""``python -m bench NAME [args]``: run one benchmark; ``python -m bench`` lists them.

Each benchmark is a module ``bench.NAME`` with ``main(args: list[str]) -> int``, imported only when
asked for, so one benchmark's dependencies never stop another from running.
"""

from __future__ import annotations

import importlib
import sys
from typing import TextIO

#: Every benchmark, in the order they are listed.
REGISTRY: dict[str, str] = {
    "tcp": "ferryman vs HAProxy vs direct: ping-pong, bulk, connection rate, redis-benchmark",
    "usage": "daily and monthly usage processing on a synthetic month",
    "forecast": "forecasters vs naive baselines on the real traces",
    "scale": "predictive vs reactive scaling on the real traces",
    "migrate": "live migration: pause, rate, replayed bytes, no loss under server kills",
    "frames": "frames-mode throughput beside HAProxy mode tcp",
}


def print_list(out: TextIO) -> None:
    print("usage: python -m bench NAME [args]    (python -m bench NAME --help for its options)\n", file=out)
    for name, what in REGISTRY.items():
        print(f"  {name:10} {what}", file=out)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print_list(sys.stdout)
        return 0
    name, args = argv[0], argv[1:]
    if name not in REGISTRY:
        print(f"unknown benchmark {name!r}\n", file=sys.stderr)
        print_list(sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.{name}":
            raise  # the benchmark exists but something it imports does not: show that
        print(f"benchmark {name!r} is not part of this build yet\n", file=sys.stderr)
        print_list(sys.stderr)
        return 2
    return int(module.main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
