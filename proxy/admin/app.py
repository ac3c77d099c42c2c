"""Admin HTTP API (aiohttp): health, stats, Prometheus metrics, config, backends, connections,
scaling, reload and drain.

Security model: binds 127.0.0.1 by default; every mutating route is POST (or PUT) and needs
``Authorization: Bearer <admin.token>``; with no token configured, mutations are refused.  Every
error is a JSON body ``{"error": <code>, "message": <text>}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from proxy.conf import parse_hostport
from proxy.core.metrics import render_prometheus

if TYPE_CHECKING:
    from proxy.runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
MAX_BODY_BYTES = 64 * 1024
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return json_response({"error": code, "message": message, **extra}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        response = error(exc.status, code, exc.reason)
        if exc.status == 405:
            allow = exc.headers.get("Allow")
            if allow:
                response.headers["Allow"] = allow
        return response


def _authorised(request: web.Request) -> web.Response | None:
    admin = request.app[RUNTIME].config.admin
    token = None if admin is None else admin.token
    if not token:
        return error(403, "forbidden", "mutations are disabled: admin.token is not set")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = error(401, "unauthorized", "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="ferryman"'
        return response
    return None


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if not raw:
        return error(400, "bad_request", "expected a JSON object body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return error(400, "bad_request", f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, "bad_request", "expected a JSON object body")
    return body


# -- read-only routes --------------------------------------------------------------------------


async def livez(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.ready:
        return json_response({"ready": True})
    reason = "draining" if runtime.draining else "starting"
    return json_response({"ready": False, "reason": reason}, status=503)


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[RUNTIME].stats())


async def metrics(request: web.Request) -> web.Response:
    text = render_prometheus(request.app[RUNTIME].metric_samples())
    return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


async def config(request: web.Request) -> web.Response:
    return json_response(request.app[RUNTIME].config.redacted())


async def backends(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return json_response({"pools": [runtime.describe_pool(name) for name in runtime.pools]})


async def connections(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    raw = request.query.get("limit", "1000")
    if not raw.isdigit() or int(raw) < 1:
        return error(400, "bad_request", "limit must be a positive integer")
    items = runtime.connections(limit=min(int(raw), 100_000))
    return json_response({"total": runtime.total_connections(), "connections": items})


async def connection(request: web.Request) -> web.Response:
    raw = request.match_info["conn_id"]
    if not raw.isdigit():
        return error(400, "bad_request", "connection id must be an integer")
    found = request.app[RUNTIME].connection(int(raw))
    if found is None:
        return error(404, "not_found", f"no open connection {raw}")
    return json_response(found)


async def series(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    settings = getattr(runtime.config, "metrics", None)
    if settings is None:
        return error(404, "not_found", "the metrics store is off: add a metrics section to the configuration")
    import asyncio

    status, body = await asyncio.to_thread(runtime.query_series, dict(request.query))
    return json_response(body, status=status)


async def scores(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.learner is None:
        return error(404, "not_found", "the learner is off: add a metrics section to the configuration")
    latest = runtime.learner.latest
    return json_response(
        {
            "ts": latest.get("ts"),
            "scored_connections": latest.get("scored_connections", 0),
            "scores": latest.get("scores", []),
        }
    )


async def forecast(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.learner is None:
        return error(404, "not_found", "the learner is off: add a metrics section to the configuration")
    latest = runtime.learner.latest
    return json_response(
        {"ts": latest.get("ts"), "forecast": latest.get("forecast"), "learner": latest.get("learner")}
    )


def _store_or_error(request: web.Request) -> Any:
    store = request.app[RUNTIME].store
    if store is None:
        return error(404, "not_found", "the session store is off: add a store section to the configuration")
    return store


def _json_value(value: Any) -> Any:
    # Partition values are msgpack values; JSON has no bytes, so they travel as base64 text.
    if isinstance(value, bytes | bytearray):
        import base64

        return {"$base64": base64.b64encode(value).decode()}
    raise TypeError


def json_data_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, default=_json_value, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


async def session_partitions(request: web.Request) -> web.Response:
    store = _store_or_error(request)
    if isinstance(store, web.Response):
        return store
    sid = request.match_info["sid"]
    names = store.get_partition_list(sid)
    if not names:
        return error(404, "not_found", f"no session {sid!r}")
    parts = []
    for name in names:
        state = store.get_partition_data(sid, name)
        if state is not None:
            parts.append({"name": name, "version": state.version, "digest": state.digest, "keys": len(state.data)})
    return json_response({"sid": sid, "partitions": parts})


async def session_partition(request: web.Request) -> web.Response:
    store = _store_or_error(request)
    if isinstance(store, web.Response):
        return store
    sid, name = request.match_info["sid"], request.match_info["name"]
    state = store.get_partition_data(sid, name)
    if state is None:
        return error(404, "not_found", f"no partition {name!r} in session {sid!r}")
    return json_data_response(
        {"sid": sid, "partition": name, "version": state.version, "digest": state.digest, "data": dict(state.data)}
    )


# -- mutations ---------------------------------------------------------------------------------


async def put_session_partition(request: web.Request) -> web.Response:
    denied = _authorised(request)
    if denied is not None:
        return denied
    store = _store_or_error(request)
    if isinstance(store, web.Response):
        return store
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    data = body.get("data")
    if not isinstance(data, dict) or set(body) - {"data"}:
        return error(400, "bad_request", 'expected {"data": {<key>: <value>, ...}}')
    from replay.store import InvalidData, InvalidName, StoreLimitExceeded

    sid, name = request.match_info["sid"], request.match_info["name"]
    if sid in request.app[RUNTIME].sessions:
        # The backend holding the session owns its changes now; a write here would fork its versions.
        return error(409, "conflict", f"session {sid!r} is live on a connection; write it when it is not")
    try:
        version = store.set_partition_data(sid, name, data)
    except (InvalidName, InvalidData) as exc:
        return error(400, "bad_request", str(exc))
    except StoreLimitExceeded as exc:
        return error(413, "limit_exceeded", str(exc))
    store.commit()
    request.app[RUNTIME].log.info("partition_set", partition=name, version=version)
    return json_response({"sid": sid, "partition": name, "version": version})


async def migrate(request: web.Request) -> web.Response:
    denied = _authorised(request)
    if denied is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    target = body.get("target")
    if not isinstance(target, str) or not target or set(body) - {"target"}:
        return error(400, "bad_request", 'expected {"target": "<server name>"}')
    raw = request.match_info["conn_id"]
    if not raw.isdigit():
        return error(400, "bad_request", "connection id must be a positive integer")
    runtime = request.app[RUNTIME]
    try:
        report = await runtime.migrate_connection(int(raw), target)
    except LookupError as exc:
        return error(404, "not_found", str(exc).strip("'\""))
    except ValueError as exc:
        return error(409, "conflict", str(exc))
    status = {"committed": 200, "deferred": 429 if report.get("cause") == "rate_limited" else 409}.get(
        report["outcome"], 502
    )
    return json_response(report, status=status)


async def server_state(request: web.Request) -> web.Response:
    denied = _authorised(request)
    if denied is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    state = body.get("state")
    allowed = ("ready", "drain", "maint")
    if state not in allowed or set(body) - {"state"}:
        return error(400, "bad_request", 'expected {"state": "ready" | "drain" | "maint"}')
    runtime = request.app[RUNTIME]
    pool, server = request.match_info["pool"], request.match_info["server"]
    if pool not in runtime.pools:
        return error(404, "not_found", f"no pool {pool!r}")
    try:
        changed = runtime.set_server_state(pool, server, state)
    except KeyError:
        return error(404, "not_found", f"no server {server!r} in pool {pool!r}")
    return json_response({"pool": pool, "server": server, "state": state, "changed": changed})


async def scale(request: web.Request) -> web.Response:
    denied = _authorised(request)
    if denied is not None:
        return denied
    runtime = request.app[RUNTIME]
    if runtime.scaling is None:
        return error(404, "not_found", "scaling is off: add a scale section to the configuration")
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    target = body.get("target_capacity", ...)
    if set(body) != {"target_capacity"} or not (
        target is None or (type(target) is int and 0 <= target <= 1_000_000)
    ):
        return error(400, "bad_request", 'expected {"target_capacity": <servers, an integer >= 0> | null}')
    try:
        result = await runtime.scale_servers(target)
    except RuntimeError as exc:
        return error(503, "unavailable", str(exc))
    return json_response(result)


async def scaling(request: web.Request) -> web.Response:
    status = request.app[RUNTIME].scaling_status()
    if status is None:
        return error(404, "not_found", "scaling is off: add a scale section to the configuration")
    return json_response(status)


async def reload(request: web.Request) -> web.Response:
    denied = _authorised(request)
    if denied is not None:
        return denied
    result = await request.app[RUNTIME].reload()
    return json_response(result.as_dict(), status=200 if result.ok else 422)


async def drain(request: web.Request) -> web.Response:
    denied = _authorised(request)
    if denied is not None:
        return denied
    runtime = request.app[RUNTIME]
    runtime.request_stop()
    return json_response({"draining": True, "connections": runtime.total_connections()}, status=202)


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY_BYTES)
    app[RUNTIME] = runtime
    r = app.router
    r.add_get("/livez", livez)
    r.add_get("/readyz", readyz)
    r.add_get("/stats", stats)
    r.add_get("/metrics", metrics)
    r.add_get("/config", config)
    r.add_get("/backends", backends)
    r.add_post("/backends/{pool}/{server}/state", server_state)
    r.add_get("/connections", connections)
    r.add_get("/connections/{conn_id}", connection)
    r.add_post("/connections/{conn_id}/migrate", migrate)
    r.add_get("/sessions/{sid}/partitions", session_partitions)
    r.add_get("/sessions/{sid}/partitions/{name}", session_partition)
    r.add_put("/sessions/{sid}/partitions/{name}", put_session_partition)
    r.add_get("/series", series)
    r.add_get("/scores", scores)
    r.add_get("/forecast", forecast)
    r.add_post("/scale", scale)
    r.add_get("/scaling", scaling)
    r.add_post("/reload", reload)
    r.add_post("/drain", drain)
    return app


class AdminServer:
    """``AppRunner`` + ``TCPSite`` bound where ``admin.bind`` says."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.bound: tuple[str, int] | None = None

    @property
    def url(self) -> str | None:
        if self.bound is None:
            return None
        host = f"[{self.bound[0]}]" if ":" in self.bound[0] else self.bound[0]
        return f"http://{host}:{self.bound[1]}"

    async def start(self, bind: str) -> None:
        self.runner = web.AppRunner(build_app(self.runtime), access_log=None, handle_signals=False)
        await self.runner.setup()
        await self._bind(bind)

    async def _bind(self, bind: str) -> None:
        assert self.runner is not None
        host, port = parse_hostport(bind)
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        self.site = site
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            addr = sockets[0].getsockname()
            self.bound = (addr[0], addr[1])

    async def rebind(self, bind: str) -> None:
        old = self.site
        try:
            await self._bind(bind)
        except OSError as exc:
            self.site = old
            self.runtime.log.error("admin_rebind_failed", bind=bind, error=str(exc))
            return
        if old is not None:
            await old.stop()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
