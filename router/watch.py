"""Watching Consul for the routing table and the certificates, with blocking queries only.

One task holds a recursive blocking query on the routes prefix (`paas/routes/`); for each routed
app it runs one more task holding a blocking query on
`/v1/health/service/<service>?passing=1&tag=live`, started and stopped as apps come and go.
With HTTPS, two more hold one on the certificates' prefix (`paas/certs/`, router/certs.py)
and on the ACME challenges' (`paas/acme/`, router/acme.py).
Each answer updates `RouteWatcher.specs` / `.servers` / `.certs` and calls `on_change`; the
applier debounces and applies.

When Consul fails, the last good values stay (HAProxy keeps serving them), each task retries
with `paas.retry.Backoff`, and one `paas.retry.Outage` logs one line when the outage starts and
one when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from paas.consul import ConsulClient, ConsulUnavailable
from paas.retry import Backoff, Outage
from paas.sealing import Sealer
from router.acme import parse_challenges
from router.certs import ServedCert, parse_certs
from router.metrics import RouterMetrics
from router.routes import (
    RouteSpec,
    RoutingTable,
    Server,
    build_table,
    parse_passing_servers,
    parse_routes,
)

log = logging.getLogger("router.watch")
FIRST_RETRY_S = 0.1


class RouteWatcher:
    """Keeps `specs` (routes from KV), `servers` (passing live web instances) and `certs`
    (with `certs_prefix` and `sealer`) up to date."""

    def __init__(self, *, client: ConsulClient, prefix: str, wait_s: float, backoff_max_s: float,
                 min_interval_s: float, metrics: RouterMetrics,
                 on_change: Callable[[], None], certs_prefix: str | None = None,
                 sealer: Sealer | None = None, acme_prefix: str | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.certs_prefix = certs_prefix
        self.sealer = sealer
        self.acme_prefix = acme_prefix
        self.wait_s = wait_s
        self.backoff_max_s = backoff_max_s
        self.min_interval_s = min_interval_s
        self.on_change = on_change
        self.metrics = metrics
        self.outage = Outage("Consul", doing="keeping the last good routes, retrying",
                             logger=log, on_change=lambda up: metrics.consul_up.set(int(up)))
        self.specs: dict[str, RouteSpec] = {}
        self.servers: dict[str, tuple[Server, ...]] = {}
        self.certs: dict[str, ServedCert] = {}
        self.challenges: dict[str, str] = {}
        self._health: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._warned: set[str] = set()

    def desired(self) -> RoutingTable:
        """The routing table Consul asks for now (apps whose instances are known so far)."""
        return build_table(self.specs, self.servers)

    async def run(self) -> None:
        """Watch until cancelled; the health tasks stop with it."""
        try:
            watches = [self._watch_routes()]
            if self.certs_prefix and self.sealer:
                watches.append(self._watch_certs())
            if self.acme_prefix:
                watches.append(self._watch_challenges())
            await asyncio.gather(*watches)
        finally:
            tasks = [task for _, task in self._health.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._health.clear()

    async def _watch_routes(self) -> None:
        def got(values: Mapping[str, bytes]) -> None:
            specs = parse_routes(values, self.prefix, warn=self._warn_once)
            if specs != self.specs:
                self.specs = specs
                self._sync_health_tasks()
                self.on_change()
        await self._watch_kv(self.prefix, got)

    async def _watch_certs(self) -> None:
        assert self.certs_prefix is not None and self.sealer is not None
        prefix, sealer = self.certs_prefix, self.sealer

        def got(values: Mapping[str, bytes]) -> None:
            certs = parse_certs(values, prefix, sealer, warn=self._warn_once)
            if certs != self.certs:
                self.certs = certs
                self.on_change()
        await self._watch_kv(prefix, got)

    async def _watch_challenges(self) -> None:
        assert self.acme_prefix is not None
        prefix = self.acme_prefix

        def got(values: Mapping[str, bytes]) -> None:
            challenges = parse_challenges(values, prefix, warn=self._warn_once)
            if challenges != self.challenges:
                self.challenges = challenges
                self.on_change()
        await self._watch_kv(prefix, got)

    async def _watch_kv(self, prefix: str, got: Callable[[Mapping[str, bytes]], None]) -> None:
        """Hand each new answer of a recursive blocking query on `prefix` to `got`."""
        index = 0
        backoff = Backoff(first=FIRST_RETRY_S, cap=self.backoff_max_s)
        while True:
            try:
                result = await self.client.list_kv(prefix, index=index, wait_s=self.wait_s)
            except ConsulUnavailable as exc:
                self._failed(exc)
                await asyncio.sleep(backoff.next())
                continue
            self.outage.ok()
            backoff.reset()
            index = result.index
            got(result.value)
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
        backoff = Backoff(first=FIRST_RETRY_S, cap=self.backoff_max_s)
        while True:
            try:
                result = await self.client.health(service, passing=True, tag="live",
                                                  index=index, wait_s=self.wait_s)
            except ConsulUnavailable as exc:
                self._failed(exc)
                await asyncio.sleep(backoff.next())
                continue
            self.outage.ok()
            backoff.reset()
            index = result.index
            servers = parse_passing_servers(result.value, service, warn=self._warn_once)
            current = self._health.get(app)
            if current is None or current[1] is not asyncio.current_task():
                return  # this app was dropped or re-pointed while we waited
            if self.servers.get(app) != servers:
                self.servers[app] = servers
                self.on_change()
            await asyncio.sleep(self.min_interval_s)

    def _failed(self, exc: ConsulUnavailable) -> None:
        self.metrics.consul_errors.inc()
        self.outage.failed(exc)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)
