"""The router's own HTTP endpoints: `/healthz`, `/metrics`, `/routes`, `/sessions` and
`/acme` (the ACME challenge tokens HAProxy answers now: the controller waits for its own).

`/routes` is the contract with the deployer (docs/architecture.md): it returns exactly what
HAProxy routes after the last successful apply, so "instance gone from /routes" means "HAProxy
sends it no new request".
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.applier import Applier
from router.haproxy import HAProxy
from router.metrics import RouterMetrics
from router.routes import table_as_json
from router.runtime_api import RuntimeApiError, parse_sessions, send_command


@dataclass
class RouterState:
    """What the admin handlers read; set up by main's cleanup context."""

    haproxy: HAProxy
    applier: Applier
    metrics: RouterMetrics


STATE = web.AppKey("router_state", RouterState)


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.haproxy.running:
        return web.json_response({"status": "down", "reason": "HAProxy is not running"},
                                 status=503)
    return web.json_response({"status": "ok", "haproxy_pid": state.haproxy.pid,
                              "generation": state.applier.generation})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def routes(request: web.Request) -> web.Response:
    applier = request.app[STATE].applier
    return web.json_response({"generation": applier.generation,
                              "apps": table_as_json(applier.applied())})


async def sessions(request: web.Request) -> web.Response:
    """Requests in flight per app and server address, from HAProxy's own counters: a drain
    stops an instance once it has none."""
    state = request.app[STATE]
    try:
        found = parse_sessions(await send_command(state.haproxy.admin_socket, "show stat"))
    except RuntimeApiError as exc:
        return web.json_response({"error": f"HAProxy's runtime API did not answer: {exc}"},
                                 status=503)
    return web.json_response({"apps": found})


async def acme(request: web.Request) -> web.Response:
    challenges = request.app[STATE].applier.challenges
    return web.json_response({"tokens": challenges.served() if challenges else []})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/acme", acme)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/sessions", sessions)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/routes", routes)
