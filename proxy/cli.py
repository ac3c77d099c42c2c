"""Command line: ``ferryman <command>`` (also ``python -m proxy``).

Each command group lives in its own module that exposes ``register(subparsers)``; the module adds its
parser(s) and sets ``func`` to a callable taking the parsed namespace and returning an exit code.
Command modules are imported here, but they must import heavy dependencies (aiohttp, river, ...)
inside their ``func`` so that ``ferryman check`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from proxy import __version__

# Order is the order of ``ferryman --help``.
COMMAND_MODULES = (
    "proxy.commands",
    "model.usage.cli",
    "model.tsdb.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferryman",
        description="Session-aware load-balancing proxy.",
    )
    parser.add_argument("--version", action="version", version=f"ferryman {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command group that is not part of this build is simply absent.
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
