"""Apps' certificates: the cluster CA's for `<app>.<domain>`, the user's for the app's own
domains; kept in the store with their keys sealed, published to Consul KV for the router.

- `platform`: issued by the cluster's CA (`--tls-dir`: `ca.pem`, `ca.key`, made by `paas up`
  or the server's install) for the app's platform host name, when the app is created or its
  certificate is missing, and again at two thirds of its lifetime.
- `own`: what `paas certs add` gives (checked by `paas.tlscerts.check_pair` against the app's
  own domains first: each refusal one sentence), until it is removed; or, with an ACME CA
  configured (`--acme-directory`) and no certificate of the user's, one ordered from it for
  the app's own domains (paas/controller/acme.py), again at two thirds of its lifetime or when
  the domains change. A failed order is retried with backoff (30 s, doubled, up to an hour);
  its sentence shows in `paas certs` and each outcome in the app's events.

The router reads `paas/certs/<app>/<kind>` = `{"cert": PEM chain, "key": sealed key}`. The key
is sealed once, when the certificate is stored, and the same sealed text is published, so the
store and KV compare equal. `reconcile` (every few seconds, with the routes) issues and renews
what is due and makes KV equal to the store; a private key never leaves through the API.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paas.consul import ConsulClient, ConsulUnavailable
from paas.controller.acme import Acme, AcmeFailed
from paas.controller.store import Store
from paas.controller.views import require_app
from paas.errors import BadRequest, NotFound, Unavailable
from paas.retry import Backoff
from paas.sealing import SealError, Sealer
from paas.tlscerts import CertError, check_pair, covers, info, issue, utcnow

log = logging.getLogger("paas.controller.certs")

CERTS_PREFIX = "paas/certs/"
PLATFORM, OWN = "platform", "own"
RENEW_AT = 2 / 3  # of a certificate's lifetime
MAX_PEM_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClusterTls:
    """The cluster's CA and seal key, read from `--tls-dir` at the controller's start."""

    ca_cert: str
    ca_key: str
    sealer: Sealer

    @classmethod
    def load(cls, folder: Path) -> ClusterTls:
        try:
            ca_cert = (folder / "ca.pem").read_text()
            ca_key = (folder / "ca.key").read_text()
        except OSError as exc:
            raise SealError(f"cannot read the cluster CA in {folder}: {exc.strerror}") from None
        return cls(ca_cert=ca_cert, ca_key=ca_key, sealer=Sealer.from_file(folder / "seal.key"))


def renew_due(row: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether two thirds of the certificate's lifetime have passed."""
    start = datetime.datetime.fromisoformat(row["not_before"])
    end = datetime.datetime.fromisoformat(row["not_after"])
    return now >= start + (end - start) * RENEW_AT


def cert_view(row: dict[str, Any], now: datetime.datetime | None = None) -> dict[str, Any]:
    """A certificate as the API shows it: never its key."""
    now = now or utcnow()
    end = datetime.datetime.fromisoformat(row["not_after"])
    return {"app": row["app"], "kind": row["kind"], "source": row["source"],
            "hostnames": row["hostnames"], "not_before": row["not_before"],
            "not_after": row["not_after"], "fingerprint": row["fingerprint"],
            "expires_in_days": round((end - now).total_seconds() / 86400, 1)}


@dataclass
class OrderState:
    """An app's ACME orders as they go: running, or the last failure and when to try again."""

    task: asyncio.Task[None] | None = None
    error: str | None = None
    next_try: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(first=30.0, cap=3600.0))

    def as_json(self, now: float) -> dict[str, Any]:
        return {"ordering": self.task is not None and not self.task.done(),
                "error": self.error,
                "next_try_in_s": round(max(0.0, self.next_try - now)) if self.error else None}


@dataclass(kw_only=True)
class Certificates:
    store: Store
    consul: ConsulClient
    domain: str
    tls: ClusterTls | None
    acme: Acme | None = None
    orders: dict[str, OrderState] = field(default_factory=dict)

    def platform_hostnames(self, app: str) -> list[str]:
        return [f"{app}.{self.domain}"]

    def own_hostnames(self, app: str) -> list[str]:
        platform = set(self.platform_hostnames(app))
        return [h for h in require_app(self.store, app)["hostnames"] if h not in platform]

    def listing(self, app: str) -> list[dict[str, Any]]:
        require_app(self.store, app)
        return [cert_view(row) for row in self.store.list_certs(app)]

    def acme_state(self, app: str) -> dict[str, Any] | None:
        """The app's ACME orders (null without an ACME CA or an order so far)."""
        state = self.orders.get(app)
        return state.as_json(time.monotonic()) if self.acme and state else None

    def _need_tls(self) -> ClusterTls:
        if self.tls is None:
            raise Unavailable("this cluster serves no HTTPS (the controller's --tls-dir is "
                              "not set)")
        return self.tls

    def _store(self, app: str, kind: str, source: str, cert: str, key: str) -> None:
        tls = self._need_tls()
        found = info(cert)
        self.store.put_cert(app=app, kind=kind, source=source, cert=cert,
                            sealed_key=tls.sealer.seal(key.encode()),
                            hostnames=list(found.hostnames),
                            not_before=found.not_before.isoformat(),
                            not_after=found.not_after.isoformat(),
                            fingerprint=found.fingerprint)

    def issue_platform(self, app: str) -> None:
        """A new certificate from the cluster CA for the app's platform host name."""
        tls = self._need_tls()
        cert, key = issue(tls.ca_cert, tls.ca_key, self.platform_hostnames(app))
        self._store(app, PLATFORM, "cluster-ca", cert, key)
        log.info("issued %s's certificate for %s from the cluster CA", app,
                 ", ".join(self.platform_hostnames(app)))

    async def add(self, app: str, cert: Any, key: Any) -> dict[str, Any]:
        """Check the user's pair against the app's own domains and serve it."""
        self._need_tls()
        if not isinstance(cert, str) or not isinstance(key, str):
            raise BadRequest("cert and key must be the PEM texts of the certificate (its chain "
                             "after it) and of its private key")
        if len(cert) > MAX_PEM_BYTES or len(key) > MAX_PEM_BYTES:
            raise BadRequest(f"cert and key must each be under {MAX_PEM_BYTES // 1024} KiB")
        own = self.own_hostnames(app)
        if not own:
            raise BadRequest(f"app {app!r} has no domain of its own to serve a certificate "
                             f"for; add one first (paas publish-deploy --app {app} --hostname HOST)")
        try:
            check_pair(cert, key, own)
        except CertError as exc:
            raise BadRequest(str(exc)) from None
        self._store(app, OWN, "user", cert, key)
        await self.publish_soon(app)
        [row] = [r for r in self.store.list_certs(app) if r["kind"] == OWN]
        return cert_view(row)

    async def renew(self, app: str) -> dict[str, Any]:
        """Renew now: the platform certificate from the cluster CA, and the own one from the
        ACME CA when it came from there (waiting for the order)."""
        require_app(self.store, app)
        self._need_tls()
        self.issue_platform(app)
        own = next((r for r in self.store.list_certs(app) if r["kind"] == OWN), None)
        if self.acme is not None and self.own_hostnames(app) and \
                (own is None or own["source"] == "acme"):
            state = self.orders.setdefault(app, OrderState())
            if state.task is not None and not state.task.done():
                await asyncio.shield(state.task)
            else:
                await self._order(app, self.own_hostnames(app))
            if state.error:
                raise Unavailable(state.error)
        await self.publish_soon(app)
        return {"certs": self.listing(app), "acme": self.acme_state(app)}

    async def remove(self, app: str, kind: str) -> None:
        require_app(self.store, app)
        if kind != OWN:
            raise BadRequest("only the app's own certificate can be removed (kind own); the "
                             "platform one is the cluster's")
        if not self.store.delete_cert(app, kind):
            raise NotFound(f"app {app!r} has no {kind} certificate")
        await self.publish_soon(app)

    async def publish_soon(self, app: str) -> None:
        """Publish now if Consul answers; else the next reconcile does (the store is kept)."""
        try:
            await self.publish(app)
        except ConsulUnavailable as exc:
            log.warning("certificates of %s not published yet: %s", app, exc)

    async def publish(self, app: str) -> None:
        """Make the app's keys under paas/certs/ equal to its rows (ConsulUnavailable goes
        to the caller; reconcile catches up later)."""
        rows = {r["kind"]: r for r in self.store.list_certs(app)}
        for kind, row in rows.items():
            await self.consul.put_kv(f"{CERTS_PREFIX}{app}/{kind}", _kv_value(row))
        for kind in (PLATFORM, OWN):
            if kind not in rows:
                await self.consul.delete_kv(f"{CERTS_PREFIX}{app}/{kind}")

    async def reconcile(self, now: datetime.datetime | None = None) -> None:
        """Issue or renew the platform certificates that are due; KV = the store."""
        if self.tls is None:
            return
        now = now or utcnow()
        apps = {a["name"] for a in self.store.list_apps()}
        rows = {(r["app"], r["kind"]): r for r in self.store.list_certs()}
        for app in sorted(apps):
            row = rows.get((app, PLATFORM))
            if row is None or renew_due(row, now) or \
                    row["hostnames"] != self.platform_hostnames(app):
                self.issue_platform(app)
            if self.acme is not None:
                self._order_if_due(app, rows.get((app, OWN)), now)
        for app in set(self.orders) - apps:
            state = self.orders.pop(app)
            if state.task is not None:
                state.task.cancel()
        wanted = {f"{CERTS_PREFIX}{r['app']}/{r['kind']}": _kv_value(r)
                  for r in self.store.list_certs()}
        found = (await self.consul.list_kv(CERTS_PREFIX)).value
        for key, value in wanted.items():
            if found.get(key, b"").decode(errors="replace") != value:
                await self.consul.put_kv(key, value)
        for key in found.keys() - wanted.keys():
            await self.consul.delete_kv(key)


    def _order_if_due(self, app: str, own: dict[str, Any] | None,
                      now: datetime.datetime) -> None:
        """Start an ACME order for the app's own domains when one is due and none runs."""
        hostnames = self.own_hostnames(app)
        if not hostnames or (own is not None and own["source"] == "user"):
            return
        covered = own is not None and all(
            any(covers(n, h) for n in own["hostnames"]) for h in hostnames)
        if covered and own is not None and not renew_due(own, now):
            return
        state = self.orders.setdefault(app, OrderState())
        if (state.task is not None and not state.task.done()) or \
                time.monotonic() < state.next_try:
            return
        state.task = asyncio.create_task(self._order(app, hostnames), name=f"acme-{app}")

    async def _order(self, app: str, hostnames: list[str]) -> None:
        """One ACME order; its outcome is stored, published and recorded in the events."""
        assert self.acme is not None
        state = self.orders.setdefault(app, OrderState())
        names = ", ".join(hostnames)
        try:
            cert, key = await self.acme.order(hostnames)
        except AcmeFailed as exc:
            delay = state.backoff.next()
            state.error, state.next_try = str(exc), time.monotonic() + delay
            log.warning("certificate of %s for %s not ordered: %s; again in %.0f s", app,
                        names, exc, delay)
            self.store.add_event(app=app, deployment_id=None, step="certificate",
                                 message=f"ordering a certificate for {names} failed: {exc}; "
                                         f"next try in {delay:.0f} s")
            return
        if self.store.get_app(app) is None:
            return  # deleted while the order ran
        self._store(app, OWN, "acme", cert, key)
        state.error, state.next_try = None, 0.0
        state.backoff.reset()
        found = info(cert)
        self.store.add_event(app=app, deployment_id=None, step="certificate",
                             message=f"the ACME CA issued a certificate for {names}, valid "
                                     f"until {found.not_after:%Y-%m-%d %H:%M} UTC")
        log.info("certificate of %s for %s issued by the ACME CA", app, names)
        await self.publish_soon(app)


def _kv_value(row: dict[str, Any]) -> str:
    return json.dumps({"cert": row["cert"], "key": row["sealed_key"]}, sort_keys=True)
