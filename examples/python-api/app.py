"""The python-api example: an aiohttp service on $PORT.

Routes: `/health` for the platform's health check, `/` (names the release and instance, then
the `GREETING` config value when set), `/api/info` (the same facts as JSON, plus how many
requests this instance has served) and `/metrics` (prometheus-client's text exposition).
"""

from __future__ import annotations

import os
import socket

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "http_requests_total", "HTTP requests served, by route.", ["route"], registry=REGISTRY
)
ROUTES = web.RouteTableDef()


def _release() -> str:
    return "v" + os.environ.get("PAAS_RELEASE", "0")


def _instance() -> str:
    return os.environ.get("PAAS_INSTANCE_ID") or socket.gethostname()


@ROUTES.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


@ROUTES.get("/")
async def home(request: web.Request) -> web.Response:
    REQUESTS.labels(route="/").inc()
    lines = [f"hello from {_release()} instance {_instance()}"]
    greeting = os.environ.get("GREETING")
    if greeting:
        lines.append(greeting)
    return web.Response(text="\n".join(lines) + "\n")


@ROUTES.get("/api/info")
async def info(request: web.Request) -> web.Response:
    REQUESTS.labels(route="/api/info").inc()
    return web.json_response(
        {
            "app": os.environ.get("PAAS_APP", "python-api"),
            "release": _release(),
            "instance": _instance(),
            "greeting": os.environ.get("GREETING"),
            "requests": REGISTRY.get_sample_value("http_requests_total", {"route": "/api/info"}),
        }
    )


@ROUTES.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def make_app() -> web.Application:
    app = web.Application()
    app.add_routes(ROUTES)
    return app


def main() -> None:
    port = int(os.environ.get("PORT", "5000"))
    # One line on start, which `paas logs` shows.
    print(f"python-api {_release()} instance {_instance()} listening on port {port}", flush=True)
    web.run_app(make_app(), port=port, print=None)


if __name__ == "__main__":
    main()
