"""Apps: creating and deleting them, their host names and route keys in Consul, and their
config vars (a change is a new release with the same image, deployed at the app's scale)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from paas.consul import ConsulClient, ConsulUnavailable
from paas.controller.certs import Certificates
from paas.controller.deployments import Deployments
from paas.controller.releases import Releases
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store
from paas.controller.views import require_app
from paas.errors import BadRequest, Conflict, Unavailable
from paas.tlscerts import covers

log = logging.getLogger("paas.controller.apps")

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                       r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _https(app: dict[str, Any]) -> dict[str, bool]:
    """The app's HTTPS choices, each false unless set."""
    found = app.get("https") or {}
    return {"redirect": found.get("redirect") is True, "hsts": found.get("hsts") is True}


@dataclass(kw_only=True)
class Apps:
    settings: ControllerSettings
    store: Store
    consul: ConsulClient
    releases: Releases
    deployments: Deployments
    certs: Certificates

    def hostnames(self, app: str) -> list[str]:
        return [f"{app}.{self.settings.domain}"]

    def _view(self, app: dict[str, Any]) -> dict[str, Any]:
        latest = self.store.latest_release(app["name"])
        return {"name": app["name"], "hostnames": app["hostnames"], "scale": app["scale"],
                "https": _https(app),
                "created_at": app["created_at"], "stable_release": app["stable_release"],
                "latest_release": latest["version"] if latest else None,
                "urls": self._urls(app["name"], app["hostnames"])}

    def _urls(self, app: str, hostnames: list[str]) -> list[str]:
        """Each host name's URL: HTTPS where a certificate of the app's covers it (its
        certificates read once)."""
        names = [name for row in self.store.list_certs(app) for name in row["hostnames"]] \
            if self.settings.public_https_port and self.certs.tls is not None else []
        return [self.url(h, secure=any(covers(n, h) for n in names)) for h in hostnames]

    def url(self, hostname: str, *, secure: bool = False) -> str:
        """Where the router serves a host name, as a browser or curl takes it."""
        if secure:
            port = self.settings.public_https_port
            return f"https://{hostname}{'' if port == 443 else f':{port}'}/"
        port = self.settings.public_port
        return f"http://{hostname}{'' if port == 80 else f':{port}'}/"

    # --- lifecycle --------------------------------------------------------------------------
    async def create(self, name: str) -> dict[str, Any]:
        if self.store.get_app(name) is not None:
            raise Conflict(f"app {name!r} already exists")
        app = self.store.create_app(name, self.hostnames(name))
        if self.certs.tls is not None:  # before the route: its first HTTPS request finds it
            self.certs.issue_platform(name)
        await self.sync_route(name)
        return self._view(app)

    def listing(self) -> list[dict[str, Any]]:
        return [self._view(a) for a in self.store.list_apps()]

    def show(self, name: str) -> dict[str, Any]:
        view = self._view(require_app(self.store, name))
        view["instances"] = len(self.store.list_instances(name))
        return view

    async def delete(self, name: str) -> None:
        """Delete the app: its deployment is cancelled, its instances are drained like a
        deploy's old ones (out of routing, requests in flight finished), then every row goes
        and the agents stop what ran."""
        require_app(self.store, name)
        self.deployments.cancel_app(name)
        await self.deployments.deployer.retire_app(name)
        self.store.delete_app(name)
        await self.sync_route(name)

    # --- routes -----------------------------------------------------------------------------
    async def sync_route(self, name: str) -> None:
        """Make Consul's route key for `name` match the store (best effort; the periodic
        reconcile retries when Consul is away)."""
        app = self.store.get_app(name)
        try:
            await self.certs.publish(name)
            if app is None:
                await self.consul.delete_route(name)
                await self.consul.delete_kv(f"paas/apps/{name}", recurse=True)
            else:
                await self.consul.put_route(name, app["hostnames"], _https(app))
        except ConsulUnavailable as exc:
            log.warning("route of %s not synced yet: %s", name, exc)

    async def reconcile_routes(self) -> None:
        """Route keys in Consul KV = apps in the store."""
        routes = await self.consul.list_routes()
        apps = {a["name"]: a for a in self.store.list_apps()}
        for name, app in apps.items():
            route = routes.get(name, {})
            if route.get("hostnames") != app["hostnames"] or route.get("https") != _https(app):
                await self.consul.put_route(name, app["hostnames"], _https(app))
        for name in routes.keys() - apps.keys():
            await self.consul.delete_route(name)
        for name, app in apps.items():
            if app["stable_release"]:
                await self.consul.put_kv(f"paas/apps/{name}/stable", str(app["stable_release"]))

    def set_domains(self, name: str, extra: Any) -> dict[str, Any]:
        """Set the app's hostnames: `<app>.<domain>` plus `extra` (publish-deploy)."""
        require_app(self.store, name)
        if not isinstance(extra, list) or not all(isinstance(h, str) for h in extra):
            raise BadRequest("hostnames must be a list of host names")
        hostnames = self.hostnames(name)
        for host in extra:
            host = host.strip().lower().rstrip(".")
            if not _HOSTNAME.fullmatch(host):
                raise BadRequest(f"invalid host name {host[:60]!r}")
            if host not in hostnames:
                hostnames.append(host)
        for other in self.store.list_apps():
            taken = set(other["hostnames"]) & set(hostnames)
            if other["name"] != name and taken:
                raise Conflict(f"host name {sorted(taken)[0]!r} already belongs to app "
                               f"{other['name']!r}")
        self.store.set_app_fields(name, hostnames=hostnames)
        return self._view(require_app(self.store, name))

    def set_https(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change the app's HTTPS choices: `redirect` (plain HTTP to HTTPS) and `hsts`."""
        app = require_app(self.store, name)
        unknown = set(body) - {"redirect", "hsts"}
        if unknown or not all(isinstance(v, bool) for v in body.values()):
            raise BadRequest("give redirect and/or hsts, each true or false")
        if self.certs.tls is None or not self.settings.public_https_port:
            raise Unavailable("this cluster serves no HTTPS (the controller's --tls-dir or "
                              "--public-https-port is not set)")
        self.store.set_app_fields(name, https={**_https(app), **body})
        return self._view(require_app(self.store, name))

    # --- config vars ------------------------------------------------------------------------
    def get_config(self, app: str) -> dict[str, str]:
        return require_app(self.store, app)["config"]

    async def set_config(self, app: str, *, set_: Any, unset: Any) -> dict[str, Any]:
        """Change config vars: a new release with the same image (as Heroku does), deployed
        at the app's scale when the app runs instances."""
        app_row = require_app(self.store, app)
        set_ = set_ or {}
        unset = unset or []
        if not isinstance(set_, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in set_.items()):
            raise BadRequest("set must be an object of string values")
        if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
            raise BadRequest("unset must be a list of names")
        for key in [*set_, *unset]:
            if not _CONFIG_KEY.fullmatch(key) or key.startswith("PAAS_") or key == "PORT":
                raise BadRequest(f"invalid config name {key[:40]!r}: use letters, digits and "
                                 "'_', not starting with a digit; PORT and PAAS_* are reserved")
        config = {k: v for k, v in {**app_row["config"], **set_}.items() if k not in unset}
        release = await self.releases.with_config(app, config)
        deployment = None
        if release is not None and self.store.list_instances(app):
            deployment = await self.deployments.deploy(app, release=release["version"],
                                                       replicas=None, kind="config")
        return {"config": config, "release": release, "deployment": deployment}
