"""The router's own HTTP endpoints: `/healthz`, `/metrics` and `/routes`.

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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/routes", routes)
