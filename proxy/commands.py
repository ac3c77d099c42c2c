"""The proxy's own commands: ``run``, ``check``, ``demo`` and ``demo-backend``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the proxy until SIGTERM")
    p.add_argument("-c", "--config", required=True, help="YAML configuration file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a configuration file (exit 0 valid, 1 invalid)")
    p.add_argument("-c", "--config", required=True, help="YAML configuration file")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="start a demo on loopback: proxy, demo backends and a little load")
    p.add_argument("--backends", type=int, default=3, help="number of demo backends (default 3)")
    p.add_argument("--clients", type=int, default=24, help="simulated clients (default 24)")
    p.add_argument("--port", type=int, default=7000, help="proxy port (default 7000; any free port if busy)")
    p.add_argument("--admin-port", type=int, default=7900, help="admin port (default 7900; any free port if busy)")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("demo-backend", help="run the demo game server (envelope dialect)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--requires", default="", help="comma-separated partitions this backend needs")
    p.add_argument(
        "--accept-proxy",
        action="store_true",
        help="every proxy connection starts with a PROXY protocol v1 or v2 header (for a pool with "
        "send_proxy); a connection without a valid one is closed",
    )
    p.set_defaults(func=cmd_demo_backend)


def _print_errors(errors: list[Any]) -> None:
    for err in errors:
        print(str(err), file=sys.stderr)


def _load(path: str) -> Any:
    from proxy.conf import ConfigInvalid, load_config

    try:
        return load_config(path)
    except ConfigInvalid as exc:
        _print_errors(exc.errors)
    except OSError as exc:
        print(f"{path}:0:0: -: cannot read file: {exc.strerror or exc}", file=sys.stderr)
    return None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    print(f"{args.config}: ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    from proxy.serve import serve

    return serve(config, config_path=args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return run_demo(
        backends=args.backends,
        clients=args.clients,
        port=args.port,
        admin_port=args.admin_port,
        duration_s=args.duration_s,
    )


def cmd_demo_backend(args: argparse.Namespace) -> int:
    from replay.demo_backend import run_backend

    requires = tuple(p for p in args.requires.split(",") if p)
    return run_backend(args.host, args.port, args.name, requires, accept_proxy=args.accept_proxy)
