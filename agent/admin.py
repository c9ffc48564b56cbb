"""The agent's admin HTTP endpoint and metrics: `GET /healthz`, `GET /metrics` on the node address.

Metrics live in a registry per agent (not prometheus-client's global one), so several agents can
run in one process in tests. `/healthz` answers 200 while the agent's loops run and shows each
dependency's state; it answers 503 once a loop has died.

`GET /v1/instances/{id}/logs` serves an instance's container log (stdout and stderr, text/plain) to
callers presenting the join token, so the controller can show and stream logs from any node:

- `tail=N`: the last N lines (default 100, at most 10000; 0 with `follow=1`: only new lines);
- `since=T`: only lines printed at or after the unix time T (seconds, fractions allowed);
- `timestamps=1`: each line starts with Docker's RFC 3339 timestamp and a space;
- `follow=1`: then every new line as it is printed, chunked, until the container stops or the
  caller disconnects (which closes Docker's stream: no reader thread outlives its caller).

`GET /v1/instances/{id}/health` (same token) answers what this node sees of an instance that
may fail its health check, so a deploy can say why: `{"known": bool, "listening": [{"address",
"port"}], "check": str | null}`: what its container listens on (`agent.sockets`; `known` is
false, and the list empty, when the container is not running or cannot be looked into) and
what its health check said last in the local Consul agent (null: no check, or Consul away).

Both answer 404 when this node has no container for the instance.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

from agent.driver import ContainerLog, ContainerMissing, DriverError, LogFollower
from agent.usage import UsageCollector, UsageFn
from paas.listeners import InstanceLook
from paas.names import InvalidName, validate_instance_id


log = logging.getLogger("agent.admin")


class AgentMetrics:
    def __init__(self, usage: UsageFn | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.usage = UsageCollector(usage) if usage is not None else None
        """Each instance's CPU and memory, read from Docker when Prometheus scrapes."""
        if self.usage is not None:
            r.register(self.usage)
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
        self.log_follows = Gauge("paas_agent_log_follows",
                                 "Container logs being followed for a caller.", registry=r)


HealthFn = Callable[[], tuple[bool, dict[str, Any]]]
LogsFn = Callable[[str, int], Awaitable[str]]
"""`logs(instance_id, tail)`: the text of the last lines, awaited. A `ContainerLog` (what the
Docker driver returns) also serves `since`, `timestamps` and `follow`."""


LookFn = Callable[[str], Awaitable[InstanceLook]]
"""`look(instance_id)`: raises ContainerMissing when this node has no container for it."""
MAX_LOG_LINES = 10_000
DEFAULT_LOG_LINES = 100
FOLLOW_POLL_S = 0.5
"""How often a follow with nothing to send checks whether its caller is still there."""
STOPPING = web.AppKey("stopping", asyncio.Event)


@dataclass(frozen=True)
class LogQuery:
    """The query of `GET /v1/instances/{id}/logs`."""

    tail: int = DEFAULT_LOG_LINES
    since: float | None = None
    timestamps: bool = False
    follow: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> LogQuery:
        """Raises ValueError with one sentence naming the bad parameter."""
        try:
            tail = int(query.get("tail", str(DEFAULT_LOG_LINES)))
        except ValueError:
            raise ValueError("tail must be an integer") from None
        since = None
        if query.get("since"):
            try:
                since = float(query["since"])
            except ValueError:
                since = -1.0
            if not math.isfinite(since) or since < 0:
                raise ValueError("since must be a unix time in seconds")
        return cls(tail=min(max(tail, 0), MAX_LOG_LINES), since=since or None,
                   timestamps=_flag(query, "timestamps"), follow=_flag(query, "follow"))


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "").lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{name} must be 1 or 0")


@dataclass(frozen=True, kw_only=True)
class _Handlers:
    """The admin routes, over what the daemon gives them."""

    metrics: AgentMetrics
    health: HealthFn
    logs: LogsFn | None
    token: str
    look: LookFn | None = None

    async def healthz(self, _: web.Request) -> web.Response:
        healthy, details = self.health()
        return web.json_response({"ok": healthy, **details}, status=200 if healthy else 503)

    async def metrics_view(self, _: web.Request) -> web.Response:
        if self.metrics.usage is not None:
            try:
                await self.metrics.usage.refresh()
            except DriverError as exc:  # the last snapshot serves; the scrape still answers
                log.warning("instance usage not read: %s", exc)
        body = generate_latest(self.metrics.registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    def _instance(self, request: web.Request) -> str | web.Response:
        """The instance id of an instance route, or the error answer (no token, bad id)."""
        if not self.token or not hmac.compare_digest(request.headers.get("Authorization", ""),
                                                     f"Bearer {self.token}"):
            return web.json_response({"error": "send Authorization: Bearer <join token>"},
                                     status=401)
        try:
            return validate_instance_id(request.match_info["instance"])
        except InvalidName:
            return web.json_response({"error": "the instance id is not well-formed"},
                                     status=400)

    async def instance_health(self, request: web.Request) -> web.Response:
        iid = self._instance(request)
        if isinstance(iid, web.Response):
            return iid
        assert self.look is not None
        try:
            seen = await self.look(iid)
        except ContainerMissing:
            return _no_container(iid)
        except DriverError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.json_response(seen.view())

    async def instance_logs(self, request: web.Request) -> web.StreamResponse:
        iid = self._instance(request)
        if isinstance(iid, web.Response):
            return iid
        try:
            query = LogQuery.parse(request.query)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        assert self.logs is not None
        source = self.logs(iid, query.tail)
        if isinstance(source, ContainerLog):
            if query.follow:
                return await self.follow(request, iid, source.follow(since=query.since,
                                                                timestamps=query.timestamps))
            reading: Awaitable[str] = source.read(since=query.since,
                                                  timestamps=query.timestamps)
        elif query.follow or query.since or query.timestamps:
            if inspect.iscoroutine(source):
                source.close()
            return web.json_response({"error": "this agent's log source can only tail"},
                                     status=501)
        else:
            reading = source
        try:
            text = await reading
        except ContainerMissing:
            return _no_container(iid)
        except DriverError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.Response(text=text, content_type="text/plain")

    async def follow(self, request: web.Request, iid: str,
                     follower: LogFollower) -> web.StreamResponse:
        try:
            await follower.open()
        except ContainerMissing:
            return _no_container(iid)
        except DriverError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        self.metrics.log_follows.inc()
        resp = web.StreamResponse(headers={"Cache-Control": "no-store"})
        resp.content_type = "text/plain"
        resp.charset = "utf-8"
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            while not _caller_gone(request):
                try:
                    chunk = await follower.get(timeout=FOLLOW_POLL_S)
                except TimeoutError:
                    continue
                if chunk is None:  # the container stopped
                    break
                await resp.write(chunk)
            if request.transport is not None and not request.transport.is_closing():
                await resp.write_eof()
        except ConnectionError:
            pass  # the caller went away mid-write
        finally:
            await follower.close()
            self.metrics.log_follows.dec()
        return resp


async def _stopping(app: web.Application) -> None:
    app[STOPPING].set()  # ends every follow, so that shutting down never waits on one


def admin_app(*, metrics: AgentMetrics, health: HealthFn, logs: LogsFn | None = None,
              token: str = "", look: LookFn | None = None) -> web.Application:
    """The admin application: `health()` returns (healthy, details); `logs(instance_id, tail)`
    returns an instance's log and `look(instance_id)` what the node sees of its health (both
    raise ContainerMissing if there is none); they are served only to callers that present
    the join token."""
    handlers = _Handlers(metrics=metrics, health=health, logs=logs, token=token, look=look)
    app = web.Application()
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stopping)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/metrics", handlers.metrics_view)
    if logs is not None:
        app.router.add_get("/v1/instances/{instance}/logs", handlers.instance_logs)
    if look is not None:
        app.router.add_get("/v1/instances/{instance}/health", handlers.instance_health)
    return app


def _no_container(iid: str) -> web.Response:
    return web.json_response({"error": f"no container for {iid} on this node"}, status=404)


def _caller_gone(request: web.Request) -> bool:
    """True once the caller disconnected or the agent is shutting down: aiohttp does not cancel
    a handler when its client goes away, so a follow waiting for lines must look."""
    transport = request.transport
    return transport is None or transport.is_closing() or request.app[STOPPING].is_set()


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
