"""Applies the desired routing table to HAProxy: debounced, one apply at a time, idempotent.

Watchers call `notify()`; `run()` waits for a quiet moment (`debounce_s`), asks `desired()` for
the table, lets `plan_changes` decide between runtime update and reload, and applies. The layout
and generation move forward only after HAProxy accepted the change, so `applied()` (served as
`GET /routes`) is exactly what HAProxy routes. A failed apply is logged and retried with backoff;
HAProxy keeps serving the last good layout meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from paas.names import InvalidName
from paas.retry import Backoff
from router import layoutfile
from router.acme import ChallengeApplier
from router.certs import CertApplier
from router.haproxy import HAProxy, HAProxyError
from router.metrics import RouterMetrics
from router.plan import Backend, Plan, plan_changes
from router.render import RenderOptions, render_config
from router.routes import InvalidRoute, RoutingTable
from router.runtime_api import RuntimeApiError

log = logging.getLogger("router.apply")


class Applier:
    """Owns the layout HAProxy runs and the only path that changes it."""

    def __init__(self, *, haproxy: HAProxy, options: RenderOptions, templates_dir: Path,
                 initial_slots: int, debounce_s: float, backoff_max_s: float,
                 metrics: RouterMetrics, desired: Callable[[], RoutingTable],
                 layout_path: Path | None = None,
                 certs: CertApplier | None = None,
                 challenges: ChallengeApplier | None = None) -> None:
        self.haproxy = haproxy
        self.options = options
        self.templates_dir = templates_dir
        self.initial_slots = initial_slots
        self.debounce_s = debounce_s
        self.backoff_max_s = backoff_max_s
        self.metrics = metrics
        self.desired = desired
        self.layout_path = layout_path
        self.layout: dict[str, Backend] = layoutfile.load(layout_path) if layout_path else {}
        self.generation = 0
        # HTTPS certificates (router/certs.py), synced before the routes on each apply; their
        # fallback when the runtime API fails is a reload of the layout HAProxy runs.
        self.certs = certs
        self.challenges = challenges  # ACME HTTP-01 answers, kept the same way
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def notify(self) -> None:
        """Something changed in Consul: apply soon."""
        self._wake.set()

    def applied(self) -> RoutingTable:
        """What HAProxy routes now (after the last successful apply)."""
        return {app: backend.route() for app, backend in self.layout.items()}

    def render(self, layout: dict[str, Backend]) -> str:
        return render_config(layout, self.options, templates_dir=self.templates_dir)

    async def start_haproxy(self) -> None:
        """Adopt the HAProxy an earlier router left serving, or (re)start HAProxy on the last
        applied layout (kept on disk: a router that cannot reach Consul yet still serves the
        routes it applied before); the next apply converges from there."""
        async with self._lock:
            config = self.render(self.layout)
            for part in (self.certs, self.challenges):
                if part is not None:
                    part.prepare()
                    part.forget()
            if await self.haproxy.adopt():
                on_disk = (self.haproxy.config_path.read_text()
                           if self.haproxy.config_path.exists() else None)
                if on_disk != config:  # the saved layout is what it must run: seamless
                    await self.haproxy.reload(config)
                return
            await self.haproxy.start(config)

    async def run(self) -> None:
        """Apply after each burst of changes until cancelled."""
        backoff = Backoff(first=0.2, cap=self.backoff_max_s)
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce_s)
            self._wake.clear()
            try:
                await self.apply_once()
            except (HAProxyError, RuntimeApiError, InvalidRoute, InvalidName, OSError) as exc:
                delay = backoff.next()
                self.metrics.apply_errors.inc()
                log.error("apply failed: %s; HAProxy keeps the last good routes; retry in %.1f s",
                          exc, delay)
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                backoff.reset()

    async def apply_once(self) -> Plan:
        """Move HAProxy to the desired table now; return the plan that was applied."""
        async with self._lock:
            if self.certs is not None:
                # Before the routes: a new app's first HTTPS request already finds its own.
                sent = await self.certs.sync(reload=self._reload_current)
                if sent:
                    self.metrics.cert_updates.inc()
                    self.metrics.runtime_commands.inc(sent)
                self.metrics.certificates.set(len(self.certs.loaded or {}))
            if self.challenges is not None:
                self.metrics.runtime_commands.inc(
                    await self.challenges.sync(reload=self._reload_current))
            plan = plan_changes(self.layout, self.desired(), initial_slots=self.initial_slots)
            if plan.noop:
                return plan
            layout = dict(plan.layout)
            config = self.render(layout)
            if plan.reload:
                await self.haproxy.reload(config)
                self.metrics.reloads.inc()
            else:
                # Written first, so a reload or restart at any later moment matches.
                self.haproxy.write_config(config)
                try:
                    sent = await self.haproxy.set_servers(plan.changes)
                except RuntimeApiError as exc:
                    log.warning("runtime API failed (%s); reloading instead", exc)
                    await self.haproxy.reload(config)
                    self.metrics.reloads.inc()
                else:
                    self.metrics.runtime_updates.inc()
                    self.metrics.runtime_commands.inc(sent)
            self.layout = layout
            self.generation += 1
            self._record()
            log.info("applied generation %d by %s", self.generation, plan.summary())
            return plan

    async def _reload_current(self) -> None:
        """Reload HAProxy on the layout it runs (the caller holds the lock)."""
        await self.haproxy.reload(self.render(self.layout))
        self.metrics.reloads.inc()

    def _record(self) -> None:
        if self.layout_path is not None:
            try:
                layoutfile.save(self.layout_path, self.layout)
            except OSError as exc:
                log.warning("cannot save the layout to %s: %s", self.layout_path, exc)
        self.metrics.generation.set(self.generation)
        self.metrics.apps.set(len(self.layout))
        self.metrics.servers.set(sum(len(b.servers) for b in self.layout.values()))
        self.metrics.last_apply.set(time.time())
