"""The one Consul client of every daemon: a thin async wrapper over py-consul (`consul.aio`).

The controller writes route keys and reads instance health, the agent registers its instances
in its node's Consul agent, the router holds blocking queries on the route keys and on the
health of each routed app. They all go through `ConsulClient`, whose methods return checked
Python values, and every failure (connection refused or reset, no answer in time, an HTTP error
status, an answer that is not the JSON Consul sends) becomes `ConsulUnavailable`, in one place
(`ConsulClient._call`). Callers retry later; nothing else escapes.

Blocking queries (`list_kv`, `health`): pass `index=0` the first time, then the `index` of the
last `Blocking` answer; Consul holds the request until the result changes or `wait_s` passes.
The index rules from Consul's docs live in `next_index`.

py-consul opens its own aiohttp session, lazily here (on the first call, inside the running
loop); `close()` (or `async with`) closes it. Timeouts are ours too: `timeout_s` per call, and
`wait_s` plus Consul's jitter plus `timeout_s` for a blocking call.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import aiohttp
import consul
import consul.aio

from paas.names import validate_app_name

ROUTES_PREFIX = "paas/routes/"
STATUSES = ("passing", "warning", "critical")
# py-consul reads a limit of 0 as "its default" (100); the router holds one blocking query per
# routed app at all times, so no limit in practice.
_NO_CONNECTION_LIMIT = 2**31

T = TypeVar("T")


class InvalidConsulUrl(ValueError):
    """The Consul URL is not `http(s)://host[:port]`: fix the setting."""


def check_url(url: str) -> str:
    """`url` without a trailing slash if a ConsulClient can use it, else InvalidConsulUrl."""
    url = url.rstrip("/")
    try:
        parts = urlsplit(url)
        usable = (parts.scheme in ("http", "https") and bool(parts.hostname)
                  and not parts.path and not parts.query and parts.port != 0)
    except ValueError:  # e.g. a port that is not a number
        usable = False
    if not usable:
        raise InvalidConsulUrl(f"Consul URL {url!r}: use http(s)://host[:port]")
    return url


class ConsulUnavailable(Exception):
    """Consul could not be reached, did not answer in time, or answered with an error:
    retry later."""


@dataclass(frozen=True)
class Blocking(Generic[T]):
    """One answer to a blocking query: the index for the next call and the decoded value."""

    index: int
    value: T


@dataclass(frozen=True)
class Service:
    """One service instance as a Consul agent holds it."""

    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthEntry:
    """One instance of a service with the worst status of its checks."""

    service: Service
    status: str
    """passing, warning or critical."""
    output: str = ""
    """What the first check that is not passing said (Consul's `Output`), else ""."""
    node: str = ""
    """The name of the Consul agent that holds the registration (a registration made through
    an agent cannot choose it)."""


def next_index(previous: int, returned: int) -> int:
    """The index for the next blocking call, following Consul's sanity rules."""
    if returned < previous:
        return 0  # the index went backwards (e.g. a restarted agent): start over
    return max(returned, 1)


def worst_status(statuses: Sequence[str]) -> str:
    """critical over warning over passing (no checks: passing)."""
    for status in ("critical", "warning"):
        if status in statuses:
            return status
    return "passing"


def failing_output(checks: Sequence[Mapping[str, Any]]) -> str:
    """The `Output` of the first check that is not passing ("" when all pass)."""
    for check in checks:
        if check.get("Status") != "passing":
            return str(check.get("Output") or "")
    return ""


class ConsulClient:
    """One Consul agent's HTTP API (`url`, e.g. `http://127.0.0.2:8500`)."""

    def __init__(self, url: str, session: object = None, *, timeout_s: float = 10.0) -> None:
        """`session` is ignored: it is accepted so that `ConsulClient(url, session)` still
        works while callers move on; py-consul opens (and `close()` closes) a session of its
        own."""
        self.url = check_url(url)
        parts = urlsplit(self.url)
        self.timeout_s = timeout_s
        host = parts.hostname
        self._host = f"[{host}]" if ":" in host else host  # py-consul joins host:port as text
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._scheme = parts.scheme
        self._consul: consul.aio.Consul | None = None

    async def close(self) -> None:
        if self._consul is not None:
            consul_, self._consul = self._consul, None
            await consul_.close()

    async def __aenter__(self) -> ConsulClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- KV -------------------------------------------------------------------------------------

    async def put_kv(self, key: str, value: str) -> None:
        await self._call(f"PUT kv {key}", self._api().kv.put(key, value))

    async def delete_kv(self, key: str, *, recurse: bool = False) -> None:
        await self._call(f"DELETE kv {key}", self._api().kv.delete(key, recurse=recurse))

    async def list_kv(self, prefix: str, *, index: int = 0,
                      wait_s: float = 30.0) -> Blocking[dict[str, bytes]]:
        """Every key under `prefix` with its value (b"" for none); blocking when `index` > 0."""
        def parse(answer: Any) -> Blocking[dict[str, bytes]]:
            returned, rows = answer
            values = {row["Key"]: row.get("Value") or b"" for row in rows or []}
            return Blocking(next_index(index, int(returned)), values)

        call = self._api().kv.get(prefix, recurse=True, **_blocking(index, wait_s))
        return await self._call(f"GET kv {prefix}", call, parse=parse,
                                timeout_s=_blocking_timeout(index, wait_s, self.timeout_s))

    # -- health ---------------------------------------------------------------------------------

    async def health(self, service: str, *, passing: bool = False, tag: str | None = None,
                     index: int = 0, wait_s: float = 30.0) -> Blocking[list[HealthEntry]]:
        """The instances of `service` (only passing ones with `passing`, only those tagged
        `tag`), each with its aggregated check status; blocking when `index` > 0."""
        def parse(answer: Any) -> Blocking[list[HealthEntry]]:
            returned, rows = answer
            entries = [HealthEntry(service=_service(row["Service"], node=row.get("Node")),
                                   status=worst_status([c["Status"] for c in
                                                        row.get("Checks") or []]),
                                   output=failing_output(row.get("Checks") or []),
                                   node=str((row.get("Node") or {}).get("Node") or ""))
                       for row in rows or []]
            return Blocking(next_index(index, int(returned)), entries)

        call = self._api().health.service(service, passing=passing, tag=tag,
                                          **_blocking(index, wait_s))
        return await self._call(f"GET health {service}", call, parse=parse,
                                timeout_s=_blocking_timeout(index, wait_s, self.timeout_s))

    async def catalog_services(self) -> list[str]:
        """The names of every service in the catalog."""
        def parse(answer: Any) -> list[str]:
            _, services = answer
            return sorted(str(name) for name in (services or {}))

        return await self._call("GET catalog services", self._api().catalog.services(),
                                parse=parse)

    # -- the local agent's services -------------------------------------------------------------

    async def agent_services(self) -> dict[str, Service]:
        """The services registered in this Consul agent, by service id."""
        def parse(answer: Any) -> dict[str, Service]:
            return {sid: _service(svc) for sid, svc in (answer or {}).items()}

        return await self._call("GET agent services", self._api().agent.services(), parse=parse)

    async def agent_check_output(self, check_id: str) -> str | None:
        """What this agent's check `check_id` said last (its `Output`), None if there is no
        such check. The agent's own view is current; the catalog's may lag by minutes
        (Consul syncs an unchanged status's output only every `check_update_interval`)."""
        def parse(answer: Any) -> str | None:
            checks = answer or {}
            if not all(isinstance(c, dict) and "Status" in c for c in checks.values()):
                raise ValueError("not a map of checks")
            check = checks.get(check_id)
            return None if check is None else str(check.get("Output") or "")

        return await self._call("GET agent checks", self._api().agent.checks(), parse=parse)

    async def register_service(self, *, service_id: str, name: str, address: str, port: int,
                               tags: Sequence[str], meta: Mapping[str, str],
                               check: Mapping[str, Any]) -> None:
        """Register (or update) a service and its one check (Consul's JSON field names) in
        this Consul agent."""
        call = self._api().agent.service.register(
            name, service_id=service_id, address=address, port=port, tags=list(tags),
            meta=dict(meta), check=dict(check))
        await self._call(f"register service {service_id}", call)

    async def deregister_service(self, service_id: str) -> None:
        """Remove a service (and its checks); no error if it is not registered."""
        try:
            await self._call(f"deregister service {service_id}",
                             self._api().agent.service.deregister(service_id))
        except ConsulUnavailable as exc:
            if "unknown service" not in str(exc).lower():
                raise  # Consul 1.8 answers 500 "Unknown service ID" for a missing service

    # -- the controller's calls -----------------------------------------------------------------

    async def put_route(self, app: str, hostnames: list[str],
                        https: dict[str, bool] | None = None) -> None:
        """The app's route for the router: its host names and HTTPS choices (redirect,
        hsts)."""
        validate_app_name(app)
        await self.put_kv(f"{ROUTES_PREFIX}{app}", json.dumps(
            {"app": app, "service": app, "hostnames": hostnames, "https": https or {}}))

    async def delete_route(self, app: str) -> None:
        validate_app_name(app)
        await self.delete_kv(f"{ROUTES_PREFIX}{app}")

    async def list_routes(self) -> dict[str, dict[str, Any]]:
        """Route keys in KV: app -> decoded value (bad values are skipped)."""
        routes: dict[str, dict[str, Any]] = {}
        for key, raw in (await self.list_kv(ROUTES_PREFIX)).value.items():
            try:
                routes[key[len(ROUTES_PREFIX):]] = json.loads(raw)
            except ValueError:
                continue
        return routes

    async def service_health(self, app: str) -> list[dict[str, Any]]:
        """Every registered instance of the app's service with its aggregated check status:
        `[{"id", "address", "port", "tags", "meta", "status", "output"}]` (status
        passing|warning|critical; output: what a failing check said)."""
        validate_app_name(app)
        return [{"id": e.service.id, "address": e.service.address, "port": e.service.port,
                 "tags": list(e.service.tags), "meta": dict(e.service.meta), "status": e.status,
                 "output": e.output}
                for e in (await self.health(app)).value]

    # -- the one place where failures are mapped ------------------------------------------------

    def _api(self) -> consul.aio.Consul:
        if self._consul is None:
            # py-consul 1.8 builds its connector with arguments aiohttp deprecates (verify_ssl,
            # ssl_context); nothing to fix on our side.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._consul = consul.aio.Consul(
                    host=self._host, port=self._port, scheme=self._scheme,
                    verify=self._scheme == "https", connections_limit=_NO_CONNECTION_LIMIT)
        return self._consul

    async def _call(self, what: str, call: Awaitable[Any], *,
                    parse: Callable[[Any], T] = lambda answer: answer,
                    timeout_s: float | None = None) -> T:
        """Await one py-consul call and parse its answer; any failure is ConsulUnavailable."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                answer = await call
            return parse(answer)
        except consul.ConsulException as exc:  # HTTP error statuses, bad JSON, no index header
            raise ConsulUnavailable(
                f"Consul {what}: {type(exc).__name__} {_short(exc)}".rstrip()) from exc
        except TimeoutError as exc:
            raise ConsulUnavailable(
                f"Consul at {self.url}: no answer to {what} within {timeout_s:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConsulUnavailable(
                f"Consul at {self.url} unreachable ({what}): "
                f"{type(exc).__name__} {_short(exc)}".rstrip()) from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Valid JSON of the wrong shape (or bad base64): not an answer Consul gives.
            raise ConsulUnavailable(
                f"Consul {what}: unexpected answer ({type(exc).__name__} {_short(exc)})") from exc


def _blocking(index: int, wait_s: float) -> dict[str, Any]:
    """py-consul's blocking arguments: none for a plain read (index 0)."""
    if index <= 0:
        return {}
    return {"index": str(index), "wait": f"{max(1, int(wait_s))}s"}


def _blocking_timeout(index: int, wait_s: float, timeout_s: float) -> float:
    # Consul adds up to wait/16 of jitter to a blocking call; allow for it and a slow answer.
    return wait_s + wait_s / 16 + timeout_s if index > 0 else timeout_s


def _service(svc: Mapping[str, Any], *, node: Mapping[str, Any] | None = None) -> Service:
    """A Service from `/v1/agent/services` values or the `Service` of a health entry; an empty
    service address means the node's."""
    address = svc.get("Address") or (node or {}).get("Address") or ""
    return Service(id=svc["ID"], name=svc["Service"], address=str(address),
                   port=int(svc.get("Port") or 0),
                   tags=tuple(str(t) for t in svc.get("Tags") or ()),
                   meta={str(k): str(v) for k, v in (svc.get("Meta") or {}).items()})


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."
