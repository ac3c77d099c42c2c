"""The demo game backend: an envelope-dialect server built on ``replay.sdk`` (DESIGN.md section 9).

``ferryman demo-backend --port P --name NAME [--requires auth,game,cart] [--accept-proxy]`` runs it
(``--accept-proxy``: every proxy connection starts with a PROXY protocol v1/v2 header, for a pool with
``send_proxy``); tests outside the project rely on its client ops, so they are a contract.  Client
frames and replies are msgpack maps (inside the envelope's ``body``):

===========================================  =====================================================
request                                      reply
===========================================  =====================================================
``{"op":"hello","sid":S}``                   ``{"ok":true,"sid":S,"server":NAME}`` (plus ``"token"``
                                             when the proxy issued the id)
``{"op":"login","user":U}``                  ``{"ok":true,"server":NAME}``; partition ``auth`` becomes
                                             ``{"user":U}``
``{"op":"incr","key":K,"seq":N}``            ``{"key":K,"value":V,"seq":N,"server":NAME}``;
                                             ``game[K]`` += 1 (from 0), V is the new value
``{"op":"cart_add","item":I}``               ``{"cart":[...],"server":NAME}``; ``I`` appended to
                                             ``cart["items"]``
``{"op":"get"}``                             ``{"state":{partition: data, ...},"server":NAME}``: the
                                             partitions this backend holds for the session now
anything else with an ``op``                 ``{"ok":false,"error":"unknown_op","server":NAME}``
not a msgpack map, or a bad ``key``          ``{"ok":false,"error":"bad_request","server":NAME}``
===========================================  =====================================================

A partition an op needs but the backend does not hold is fetched through the SDK's ``missing`` /
``restore`` round trip before the op is applied, so ``login`` on a fresh session works whatever the
backend's ``requires`` say.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

import msgpack

from replay.sdk import Server, Session

__all__ = ["build_server", "main", "run_backend", "serve_backend"]


def build_server(name: str, requires: Sequence[str] = (), *, accept_proxy: bool = False) -> Server:
    """The demo game server (not listening yet: ``await server.start(host, port)``)."""
    server = Server(name, requires=tuple(requires), accept_proxy=accept_proxy)

    def reply(obj: dict[str, Any]) -> bytes:
        obj["server"] = name
        return msgpack.packb(obj, use_bin_type=True)

    bad_request = reply({"ok": False, "error": "bad_request"})
    unknown_op = reply({"ok": False, "error": "unknown_op"})

    @server.handler
    async def on_frame(session: Session, body: bytes) -> bytes | None:
        try:
            msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception:  # a client's garbage: any msgpack failure is a bad request
            return bad_request
        if type(msg) is not dict:
            return bad_request
        op = msg.get("op")
        if op == "incr":
            key = msg.get("key")
            if type(key) not in (str, int, bytes):
                return bad_request
            game = session.state["game"]
            value = game.get(key, 0)
            value = (value if type(value) is int else 0) + 1
            game[key] = value
            return reply({"key": key, "value": value, "seq": msg.get("seq")})
        if op == "hello":
            hello = {"ok": True, "sid": msg.get("sid", session.sid)}
            if session.token is not None:
                hello["token"] = session.token  # a fresh id's token, issued by the proxy
            return reply(hello)
        if op == "login":
            session.state["auth"] = {"user": msg.get("user")}
            return reply({"ok": True})
        if op == "cart_add":
            cart = session.state["cart"]
            items = cart.get("items")
            items = list(items) if type(items) is list else []
            items.append(msg.get("item"))
            cart["items"] = items
            return reply({"cart": items})
        if op == "get":
            return reply({"state": {p: session.state[p].to_dict() for p in session.state}})
        return unknown_op

    return server


async def serve_backend(
    host: str,
    port: int,
    name: str,
    requires: Sequence[str] = (),
    ready: asyncio.Event | None = None,
    *,
    accept_proxy: bool = False,
) -> None:
    """Serve the demo backend until cancelled; print ``listening HOST:PORT name=NAME`` once listening."""
    server = build_server(name, requires, accept_proxy=accept_proxy)
    bound_host, bound_port = await server.start(host, port)
    try:
        print(f"listening {bound_host}:{bound_port} name={name}", flush=True)
        if ready is not None:
            ready.set()
        await asyncio.Future()  # until cancelled
    finally:
        await server.close()


async def _main(host: str, port: int, name: str, requires: tuple[str, ...], accept_proxy: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(serve_backend(host, port, name, requires, accept_proxy=accept_proxy))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        serving.cancel()
        stopping.cancel()
        outcome = (await asyncio.gather(serving, stopping, return_exceptions=True))[0]
    if isinstance(outcome, Exception):
        raise outcome  # e.g. the address is in use


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform but Windows
        return None
    return uvloop.new_event_loop


def run_backend(
    host: str, port: int, name: str, requires: tuple[str, ...] = (), *, accept_proxy: bool = False
) -> int:
    """Run the demo backend in this process until SIGTERM/SIGINT; return the exit code."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(_main(host, port, name, tuple(requires), accept_proxy))
        except OSError as exc:
            print(
                f"demo-backend {name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
            )
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m replay.demo_backend --port P --name NAME [--requires auth,game] [--accept-proxy]``."""
    parser = argparse.ArgumentParser(
        prog="python -m replay.demo_backend", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="demo")
    parser.add_argument("--requires", default="", help="comma-separated partition names")
    parser.add_argument(
        "--accept-proxy",
        action="store_true",
        help="every proxy connection starts with a PROXY protocol v1 or v2 header (for a pool with "
        "send_proxy); a connection without a valid one is closed",
    )
    args = parser.parse_args(argv)
    requires = tuple(p for p in args.requires.split(",") if p)
    return run_backend(args.host, args.port, args.name, requires, accept_proxy=args.accept_proxy)


if __name__ == "__main__":
    sys.exit(main())
