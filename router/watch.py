"""Watching Consul for the routing table, with blocking queries only.

One task holds a recursive blocking query on the routes prefix (`paas/routes/`); for each routed
app it runs one more task holding a blocking query on
`/v1/health/service/<service>?passing=1&tag=live`, started and stopped as apps come and go.
Each answer updates `RouteWatcher.specs` / `.servers` and calls `on_change`; the applier
debounces and applies.

When Consul fails, the last good values stay (HAProxy keeps serving them), each task retries
with exponential backoff, and `Outage` logs one line when the outage starts and one when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from router.consul import ConsulClient, ConsulUnavailable, parse_passing_servers, parse_routes
from router.metrics import RouterMetrics
from router.routes import RouteSpec, RoutingTable, Server, build_table

log = logging.getLogger("router.watch")


class Backoff:
    """Exponential delays: `first`, doubled each failure, capped at `cap`; reset on success."""

    def __init__(self, *, first: float = 0.1, cap: float = 3.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class Outage:
    """One log line when Consul stops answering, one when it answers again; not one per retry."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        self.since: float | None = None

    def failed(self, exc: Exception) -> None:
        self.metrics.consul_errors.inc()
        if self.since is None:
            self.since = time.monotonic()
            self.metrics.consul_up.set(0)
            log.warning("Consul unreachable (%s); keeping the last good routes, retrying", exc)

    def ok(self) -> None:
        if self.since is not None:
            log.info("Consul answers again after %.1f s", time.monotonic() - self.since)
            self.since = None
        self.metrics.consul_up.set(1)


class RouteWatcher:
    """Keeps `specs` (routes from KV) and `servers` (passing live web instances) up to date."""

    def __init__(self, *, client: ConsulClient, prefix: str, wait_s: float, backoff_max_s: float,
                 min_interval_s: float, metrics: RouterMetrics,
                 on_change: Callable[[], None]) -> None:
        self.client = client
        self.prefix = prefix
        self.wait_s = wait_s
        self.backoff_max_s = backoff_max_s
        self.min_interval_s = min_interval_s
        self.on_change = on_change
        self.outage = Outage(metrics)
        self.specs: dict[str, RouteSpec] = {}
        self.servers: dict[str, tuple[Server, ...]] = {}
        self._health: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._warned: set[str] = set()

    def desired(self) -> RoutingTable:
        """The routing table Consul asks for now (apps whose instances are known so far)."""
        return build_table(self.specs, self.servers)

    async def run(self) -> None:
        """Watch until cancelled; the health tasks stop with it."""
        try:
            await self._watch_routes()
        finally:
            tasks = [task for _, task in self._health.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._health.clear()

    async def _watch_routes(self) -> None:
        index = 0
        backoff = Backoff(cap=self.backoff_max_s)
        while True:
            try:
                result = await self.client.blocking_get(
                    f"/v1/kv/{self.prefix}", {"recurse": "true"}, index=index, wait_s=self.wait_s)
            except ConsulUnavailable as exc:
                self.outage.failed(exc)
                await asyncio.sleep(backoff.next())
                continue
            self.outage.ok()
            backoff.reset()
            index = result.index
            specs = parse_routes(result.body, self.prefix, warn=self._warn_once)
            if specs != self.specs:
                self.specs = specs
                self._sync_health_tasks()
                self.on_change()
            await asyncio.sleep(self.min_interval_s)  # a floor between calls, not a poll

    def _sync_health_tasks(self) -> None:
        for app in list(self._health):
            service, task = self._health[app]
            spec = self.specs.get(app)
            if spec is None or spec.service != service:
                task.cancel()
                del self._health[app]
                if spec is None:
                    self.servers.pop(app, None)
        for app, spec in self.specs.items():
            if app not in self._health:
                task = asyncio.create_task(self._watch_health(app, spec.service),
                                           name=f"watch-health-{app}")
                self._health[app] = (spec.service, task)

    async def _watch_health(self, app: str, service: str) -> None:
        index = 0
        backoff = Backoff(cap=self.backoff_max_s)
        path = f"/v1/health/service/{service}"  # service is a validated app name
        while True:
            try:
                result = await self.client.blocking_get(
                    path, {"passing": "1", "tag": "live"}, index=index, wait_s=self.wait_s)
            except ConsulUnavailable as exc:
                self.outage.failed(exc)
                await asyncio.sleep(backoff.next())
                continue
            self.outage.ok()
            backoff.reset()
            index = result.index
            servers = parse_passing_servers(result.body, service, warn=self._warn_once)
            current = self._health.get(app)
            if current is None or current[1] is not asyncio.current_task():
                return  # this app was dropped or re-pointed while we waited
            if self.servers.get(app) != servers:
                self.servers[app] = servers
                self.on_change()
            await asyncio.sleep(self.min_interval_s)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)
