"""The agent's admin HTTP endpoint and metrics: `GET /healthz`, `GET /metrics` on the node address.

Metrics live in a registry per agent (not prometheus-client's global one), so several agents can
run in one process in tests. `/healthz` answers 200 while the agent's loops run and shows each
dependency's state; it answers 503 once a loop has died. `GET /v1/instances/{id}/logs?tail=N`
returns the last N lines of an instance's container log (text/plain) to callers presenting the
join token, so the controller can show a failing instance's log from any node.
"""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

from agent.driver import ContainerMissing, DriverError
from paas.names import InvalidName, validate_instance_id


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances = Gauge("paas_agent_instances", "Assigned instances by reported state.",
                               ["state"], registry=r)
        self.reconciles = Counter("paas_agent_reconciles", "Reconcile passes run.", registry=r)
        self.reconcile_seconds = Histogram("paas_agent_reconcile_seconds",
                                           "Duration of a reconcile pass.", registry=r)
        self.actions = Counter("paas_agent_actions", "Plan actions carried out.",
                               ["action", "result"], registry=r)
        self.heartbeats = Counter("paas_agent_heartbeats", "Heartbeats sent.", ["result"],
                                  registry=r)
        self.assignment_index = Gauge("paas_agent_assignment_index",
                                      "The latest assignment index received.", registry=r)
        self.dependency_up = Gauge("paas_agent_dependency_up",
                                   "1 if the dependency answered its last call.",
                                   ["dependency"], registry=r)
        self.restarts = Counter("paas_agent_container_restarts",
                                "Containers restarted after they exited.", registry=r)


HealthFn = Callable[[], tuple[bool, dict[str, Any]]]
LogsFn = Callable[[str, int], Awaitable[str]]
MAX_LOG_LINES = 10_000


def admin_app(*, metrics: AgentMetrics, health: HealthFn, logs: LogsFn | None = None,
              token: str = "") -> web.Application:
    """The admin application: `health()` returns (healthy, details); `logs(instance_id, tail)`
    returns an instance's log (ContainerMissing if none) and is served only to callers that
    present the join token."""

    async def healthz(_: web.Request) -> web.Response:
        healthy, details = health()
        return web.json_response({"ok": healthy, **details}, status=200 if healthy else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def instance_logs(request: web.Request) -> web.Response:
        if not token or not hmac.compare_digest(request.headers.get("Authorization", ""),
                                                f"Bearer {token}"):
            return web.json_response({"error": "send Authorization: Bearer <join token>"},
                                     status=401)
        try:
            iid = validate_instance_id(request.match_info["instance"])
            tail = min(max(int(request.query.get("tail", "100")), 1), MAX_LOG_LINES)
        except (InvalidName, ValueError):
            return web.json_response({"error": "bad instance id or tail"}, status=400)
        assert logs is not None
        try:
            text = await logs(iid, tail)
        except ContainerMissing:
            return web.json_response({"error": f"no container for {iid} on this node"},
                                     status=404)
        except DriverError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    if logs is not None:
        app.router.add_get("/v1/instances/{instance}/logs", instance_logs)
    return app


async def serve_admin(app: web.Application, *, host: str, port: int) -> web.AppRunner:
    """Start serving `app`; the caller cleans up the returned runner."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
