"""Apps' certificates: the cluster CA's for `<app>.<domain>`, the user's for the app's own
domains; kept in the store with their keys sealed, published to Consul KV for the router.

- `platform`: issued by the cluster's CA (`--tls-dir`: `ca.pem`, `ca.key`, made by `paas up`
  or the server's install) for the app's platform host name, when the app is created or its
  certificate is missing, and again at two thirds of its lifetime.
- `own`: what `paas certs add` gives (checked by `paas.tlscerts.check_pair` against the app's
  own domains first: each refusal one sentence), until it is removed.

The router reads `paas/certs/<app>/<kind>` = `{"cert": PEM chain, "key": sealed key}`. The key
is sealed once, when the certificate is stored, and the same sealed text is published, so the
store and KV compare equal. `reconcile` (every few seconds, with the routes) issues and renews
what is due and makes KV equal to the store; a private key never leaves through the API.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paas.consul import ConsulClient, ConsulUnavailable
from paas.controller.store import Store
from paas.controller.views import require_app
from paas.errors import BadRequest, NotFound, Unavailable
from paas.sealing import SealError, Sealer
from paas.tlscerts import CertError, check_pair, info, issue, utcnow

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


@dataclass(kw_only=True)
class Certificates:
    store: Store
    consul: ConsulClient
    domain: str
    tls: ClusterTls | None

    def platform_hostnames(self, app: str) -> list[str]:
        return [f"{app}.{self.domain}"]

    def own_hostnames(self, app: str) -> list[str]:
        platform = set(self.platform_hostnames(app))
        return [h for h in require_app(self.store, app)["hostnames"] if h not in platform]

    def listing(self, app: str) -> list[dict[str, Any]]:
        require_app(self.store, app)
        return [cert_view(row) for row in self.store.list_certs(app)]

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
                             f"for; add one first (paas domains {app} HOST)")
        try:
            check_pair(cert, key, own)
        except CertError as exc:
            raise BadRequest(str(exc)) from None
        self._store(app, OWN, "user", cert, key)
        await self.publish_soon(app)
        [row] = [r for r in self.store.list_certs(app) if r["kind"] == OWN]
        return cert_view(row)

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
        wanted = {f"{CERTS_PREFIX}{r['app']}/{r['kind']}": _kv_value(r)
                  for r in self.store.list_certs()}
        found = (await self.consul.list_kv(CERTS_PREFIX)).value
        for key, value in wanted.items():
            if found.get(key, b"").decode(errors="replace") != value:
                await self.consul.put_kv(key, value)
        for key in found.keys() - wanted.keys():
            await self.consul.delete_kv(key)


def _kv_value(row: dict[str, Any]) -> str:
    return json.dumps({"cert": row["cert"], "key": row["sealed_key"]}, sort_keys=True)
