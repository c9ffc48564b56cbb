"""The routing table: what the router wants HAProxy to route, with every value checked.

Values arrive from Consul (written by the controller and the agents) and end up in HAProxy's
configuration and runtime commands, so each one is validated where it is built: app names by
`paas.names`, hostnames against a strict DNS-name pattern, servers as IPv4 address + port.

`parse_routes` and `parse_passing_servers` turn what `paas.consul` read into these values; a bad
entry is skipped with a warning (through `warn`, which the watcher makes once-per-message)
rather than breaking the others.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from paas.consul import HealthEntry
from paas.names import InvalidName, validate_app_name

log = logging.getLogger("router.routes")

# Lowercase labels of 1-63 characters, no leading/trailing '-', 253 characters in all.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class InvalidRoute(ValueError):
    """A route value that must not reach HAProxy; the message names the value."""


def validate_hostname(name: object) -> str:
    """Return `name` if it is a lowercase DNS name (no port, no trailing dot), else raise."""
    if not isinstance(name, str) or not HOSTNAME_RE.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 80 else "that value"
        raise InvalidRoute(f"invalid hostname {shown!r}: use lowercase DNS labels separated by dots")
    return name


@dataclass(frozen=True, order=True)
class Server:
    """One routable instance: an IPv4 address and a TCP port."""

    host: str
    port: int

    def __post_init__(self) -> None:
        try:
            ipaddress.IPv4Address(self.host)
        except (ValueError, TypeError):
            raise InvalidRoute(f"invalid server address {self.host!r}: need an IPv4 address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise InvalidRoute(f"invalid server port {self.port!r}: need 1-65535")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class HttpsPolicy:
    """An app's HTTPS choices: plain HTTP requests redirected to HTTPS (308, the ACME
    challenge path excepted), and HSTS on HTTPS answers."""

    redirect: bool = False
    hsts: bool = False


@dataclass(frozen=True)
class RouteSpec:
    """One app's route as the controller wrote it to `paas/routes/<app>`."""

    app: str
    service: str
    hostnames: tuple[str, ...]
    https: HttpsPolicy = HttpsPolicy()

    def __post_init__(self) -> None:
        validate_app_name(self.app)
        validate_app_name(self.service)  # services are named after apps
        for hostname in self.hostnames:
            validate_hostname(hostname)


@dataclass(frozen=True)
class AppRoute:
    """What HAProxy should do for one app: its hostnames and the servers behind them."""

    app: str
    hostnames: tuple[str, ...]
    servers: tuple[Server, ...]
    https: HttpsPolicy = HttpsPolicy()

    def __post_init__(self) -> None:
        validate_app_name(self.app)
        for hostname in self.hostnames:
            validate_hostname(hostname)
        for server in self.servers:
            if not isinstance(server, Server):
                raise InvalidRoute(f"server of {self.app} is not a Server: {server!r}")

    def as_json(self) -> dict[str, list[str]]:
        return {"hostnames": list(self.hostnames), "servers": [str(s) for s in self.servers]}


RoutingTable = dict[str, AppRoute]
"""App name -> its route; the whole desired (or applied) state of the router."""


def build_table(
    specs: Mapping[str, RouteSpec], servers: Mapping[str, Iterable[Server]]
) -> RoutingTable:
    """Join route specs with the passing servers of their services into a routing table.

    Apps whose servers are not known yet (no answer from Consul so far) are left out, so an app
    first appears with its instances in one change. A hostname claimed by two apps goes to the
    one whose name sorts first; the other loses it, with a warning.
    """
    table: RoutingTable = {}
    owner: dict[str, str] = {}
    for app in sorted(specs):
        if app not in servers:
            continue
        hostnames: list[str] = []
        for hostname in sorted(set(specs[app].hostnames)):
            if hostname in owner:
                log.warning("hostname %s is claimed by %s and %s; routing it to %s",
                            hostname, owner[hostname], app, owner[hostname])
                continue
            owner[hostname] = app
            hostnames.append(hostname)
        table[app] = AppRoute(app=app, hostnames=tuple(hostnames),
                              servers=tuple(sorted(set(servers[app]))),
                              https=specs[app].https)
    return table


def table_as_json(table: RoutingTable) -> dict[str, dict[str, list[str]]]:
    """The `apps` part of `GET /routes`."""
    return {app: table[app].as_json() for app in sorted(table)}


Warn = Callable[[str], None]


def _log_warning(message: str) -> None:
    log.warning("%s", message)


def parse_routes(values: Mapping[str, bytes], prefix: str, *,
                 warn: Warn = _log_warning) -> dict[str, RouteSpec]:
    """Route specs from the keys under `prefix` (key -> raw value); bad entries skipped."""
    specs: dict[str, RouteSpec] = {}
    for key, raw in values.items():
        app = key[len(prefix):] if key.startswith(prefix) else ""
        if not app or "/" in app:
            continue  # a folder marker or a deeper key: not a route
        try:
            value = json.loads(raw.decode("utf-8"))
            if not isinstance(value, dict):
                raise InvalidRoute("route value is not a JSON object")
            hostnames = value.get("hostnames", [])
            if not isinstance(hostnames, list):
                raise InvalidRoute("hostnames is not a list")
            https = value.get("https") or {}
            if not isinstance(https, dict) or not all(
                    isinstance(https.get(k, False), bool) for k in ("redirect", "hsts")):
                raise InvalidRoute("https is not an object of redirect and hsts booleans")
            spec = RouteSpec(
                app=app,
                service=value.get("service", app),
                hostnames=tuple(h.lower().rstrip(".") if isinstance(h, str) else h
                                for h in hostnames),
                https=HttpsPolicy(redirect=https.get("redirect", False),
                                  hsts=https.get("hsts", False)),
            )
            if value.get("app", app) != app:
                raise InvalidRoute(f"route at {key} names app {value.get('app')!r}")
        except (ValueError, InvalidName, InvalidRoute) as exc:
            warn(f"ignoring route {key}: {exc}")
            continue
        specs[app] = spec
    return specs


@dataclass(frozen=True)
class Placed:
    """Where the controller placed an instance (paas/controller/placements.py)."""

    node: str  # the Consul agent's name
    address: str
    port: int | None  # None until the node reported it

    def admits(self, entry: HealthEntry) -> bool:
        return (entry.node == self.node and entry.service.address == self.address
                and (self.port is None or entry.service.port == self.port))


def parse_placed(values: Mapping[str, bytes], prefix: str, *,
                 warn: Warn = _log_warning) -> dict[str, dict[str, Placed]]:
    """app -> instance id -> Placed, from the keys under `prefix`; bad values skipped."""
    found: dict[str, dict[str, Placed]] = {}
    for key, raw in values.items():
        app = key[len(prefix):]
        try:
            validate_app_name(app)
            value = json.loads(raw.decode("utf-8"))
            found[app] = {str(iid): Placed(node=str(p["node"]), address=str(p["address"]),
                                           port=None if p.get("port") is None
                                           else int(p["port"]))
                          for iid, p in value.items()}
        except (ValueError, InvalidName, KeyError, TypeError, AttributeError) as exc:
            warn(f"ignoring placements {key}: {exc!r}")
    return found


def parse_passing_servers(entries: Sequence[HealthEntry], service: str, *,
                          warn: Warn = _log_warning,
                          placed: Mapping[str, Placed] | None = None,
                          refuse: Callable[[HealthEntry], None] | None = None
                          ) -> tuple[Server, ...]:
    """Routable servers from the health of `service` (asked with passing=1, tag=live).

    Only passing entries whose tags hold both `live` and `web` count: control instances and
    other process types never get traffic, whatever the query filtered. With `placed` (the
    controller's placements of the app), an entry also needs its id placed on its node, at
    its address (and port, once known); any other is handed to `refuse`.
    """
    servers: set[Server] = set()
    for entry in entries:
        svc = entry.service
        if entry.status != "passing" or not {"live", "web"} <= set(svc.tags):
            continue
        if placed is not None:
            where = placed.get(svc.id)
            if where is None or not where.admits(entry):
                if refuse is not None:
                    refuse(entry)
                continue
        try:
            servers.add(Server(svc.address, svc.port))
        except InvalidRoute as exc:
            warn(f"ignoring instance {svc.id!r} of {service}: {exc}")
    return tuple(sorted(servers))
