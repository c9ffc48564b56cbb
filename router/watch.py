"""Watching Consul for the routing table and the certificates, with blocking queries only.

One task holds a recursive blocking query on the routes prefix (`paas/routes/`); for each routed
app it runs one more task holding a blocking query on
`/v1/health/service/<service>?passing=1&tag=live`, started and stopped as apps come and go.
With HTTPS, two more hold one on the certificates' prefix (`paas/certs/`, router/certs.py)
and on the ACME challenges' (`paas/acme/`, router/acme.py). With `placed_prefix`, one more
on the controller's placements (`paas/placed/`): an instance is routed only if the controller
placed it there (its id, Consul node and address), whatever Consul says; any other passing
registration is refused, logged once and counted (`paas_router_unplaced_refused_total`).
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
from typing import TypeVar

from paas.consul import ConsulClient, ConsulUnavailable, HealthEntry
from paas.retry import Backoff, Outage
from paas.sealing import Sealer
from router.acme import parse_challenges
from router.certs import ServedCert, parse_certs
from router.metrics import RouterMetrics
from router.routes import (
    Placed,
    RouteSpec,
    RoutingTable,
    Server,
    build_table,
    parse_passing_servers,
    parse_placed,
    parse_routes,
)

log = logging.getLogger("router.watch")
T = TypeVar("T")
FIRST_RETRY_S = 0.1


class RouteWatcher:
    """Keeps `specs` (routes from KV), `servers` (passing live web instances) and `certs`
    (with `certs_prefix` and `sealer`) up to date."""

    def __init__(self, *, client: ConsulClient, prefix: str, wait_s: float, backoff_max_s: float,
                 min_interval_s: float, metrics: RouterMetrics,
                 on_change: Callable[[], None], certs_prefix: str | None = None,
                 sealer: Sealer | None = None, acme_prefix: str | None = None,
                 placed_prefix: str | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.certs_prefix = certs_prefix
        self.sealer = sealer
        self.acme_prefix = acme_prefix
        self.placed_prefix = placed_prefix
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
        self.entries: dict[str, list[HealthEntry]] = {}  # app -> passing live registrations
        self.placed: dict[str, dict[str, Placed]] = {}
        self._refused: set[tuple[str, str, str, int]] = set()
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
            if self.placed_prefix:
                watches.append(self._watch_placed())
            await asyncio.gather(*watches)
        finally:
            tasks = [task for _, task in self._health.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._health.clear()

    async def _watch_routes(self) -> None:
        def routes(specs: dict[str, RouteSpec]) -> None:
            self.specs = specs
            self._sync_health_tasks()
            self.on_change()
        await self._watch_kv(self.prefix, lambda values: parse_routes(
            values, self.prefix, warn=self._warn_once), routes)

    async def _watch_certs(self) -> None:
        assert self.certs_prefix is not None and self.sealer is not None
        prefix, sealer = self.certs_prefix, self.sealer

        def certs(found: dict[str, ServedCert]) -> None:
            self.certs = found
            self.on_change()
        await self._watch_kv(prefix, lambda values: parse_certs(
            values, prefix, sealer, warn=self._warn_once), certs)

    async def _watch_challenges(self) -> None:
        assert self.acme_prefix is not None
        prefix = self.acme_prefix

        def challenges(found: dict[str, str]) -> None:
            self.challenges = found
            self.on_change()
        await self._watch_kv(prefix, lambda values: parse_challenges(
            values, prefix, warn=self._warn_once), challenges)

    async def _watch_placed(self) -> None:
        assert self.placed_prefix is not None
        prefix = self.placed_prefix

        def placed(found: dict[str, dict[str, Placed]]) -> None:
            self.placed = found
            for app in list(self.entries):
                self._update_servers(app)
        await self._watch_kv(prefix, lambda values: parse_placed(
            values, prefix, warn=self._warn_once), placed)

    def _update_servers(self, app: str) -> None:
        """The app's routable servers from its registrations (and the placements)."""
        spec = self.specs.get(app)
        if spec is None or app not in self.entries:
            return
        servers = parse_passing_servers(
            self.entries[app], spec.service, warn=self._warn_once,
            placed=self.placed.get(app, {}) if self.placed_prefix else None,
            refuse=lambda entry: self._refuse(app, entry))
        if self.servers.get(app) != servers:
            self.servers[app] = servers
            self.on_change()

    def _refuse(self, app: str, entry: HealthEntry) -> None:
        svc = entry.service
        key = (app, svc.id, svc.address, svc.port)
        if key not in self._refused:
            self._refused.add(key)
            self.metrics.unplaced_refused.inc()
            log.warning("refusing %s instance %r at %s:%d on Consul node %r: the controller "
                        "did not place it there", app, svc.id, svc.address, svc.port,
                        entry.node)

    async def _watch_kv(self, prefix: str, parse: Callable[[Mapping[str, bytes]], T],
                        accept: Callable[[T], None]) -> None:
        """Parse each answer of a recursive blocking query on `prefix`; hand what it says to
        `accept` when it differs from the last (at first: what no key says)."""
        last = parse({})
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
            found = parse(result.value)
            if found != last:
                last = found
                accept(found)
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
                    self.entries.pop(app, None)
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
            current = self._health.get(app)
            if current is None or current[1] is not asyncio.current_task():
                return  # this app was dropped or re-pointed while we waited
            self.entries[app] = list(result.value)
            self._update_servers(app)
            await asyncio.sleep(self.min_interval_s)

    def _failed(self, exc: ConsulUnavailable) -> None:
        self.metrics.consul_errors.inc()
        self.outage.failed(exc)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)
