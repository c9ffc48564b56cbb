"""A thin Consul HTTP client for blocking queries, and the parsers of what the router reads.

`ConsulClient.blocking_get` is one call of Consul's blocking-query protocol: pass the last
`X-Consul-Index` as `index` and Consul holds the request until the result changes or `wait`
passes. The index rules from Consul's docs live in `next_index`: reset to 0 when it goes
backwards, never below 1 once blocking.

`parse_routes` and `parse_passing_servers` turn Consul's JSON into checked router values; a bad
entry is skipped with a warning (through `warn`, which the watcher makes once-per-message)
rather than breaking the others.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from paas.names import InvalidName
from router.routes import InvalidRoute, RouteSpec, Server

log = logging.getLogger("router.consul")


class ConsulUnavailable(Exception):
    """Consul could not be reached or answered with an error: retry later, keep the last routes."""


@dataclass(frozen=True)
class BlockingResult:
    """One answer to a blocking query: the new index and the decoded body (None for 404)."""

    index: int
    body: Any


def next_index(previous: int, returned: int) -> int:
    """The index for the next blocking call, following Consul's sanity rules."""
    if returned < previous:
        return 0  # the index went backwards (e.g. a restarted agent): start over
    return max(returned, 1)


class ConsulClient:
    """One aiohttp session to one Consul agent; one method per endpoint the router uses."""

    def __init__(self, base_url: str, *, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    async def blocking_get(self, path: str, params: Mapping[str, str], *, index: int,
                           wait_s: float) -> BlockingResult:
        """GET `path` as a blocking query; 404 gives body None (e.g. no keys under a prefix)."""
        query = dict(params)
        if index > 0:
            query["index"] = str(index)
            query["wait"] = f"{max(1, int(wait_s))}s"
        # Consul adds up to wait/16 of jitter; allow for it and a slow answer.
        timeout = aiohttp.ClientTimeout(total=wait_s + wait_s / 16 + 10)
        try:
            async with self.session.get(self.base_url + path, params=query,
                                        timeout=timeout) as resp:
                if resp.status not in (200, 404):
                    text = (await resp.text())[:200]
                    raise ConsulUnavailable(f"Consul answered {resp.status} to {path}: {text}")
                try:
                    returned = int(resp.headers.get("X-Consul-Index", "0"))
                except ValueError:
                    returned = 0
                body = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ConsulUnavailable(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        return BlockingResult(index=next_index(index, returned), body=body)


Warn = Callable[[str], None]


def _log_warning(message: str) -> None:
    log.warning("%s", message)


def parse_routes(entries: list[dict[str, Any]] | None, prefix: str, *,
                 warn: Warn = _log_warning) -> dict[str, RouteSpec]:
    """Route specs from a recursive KV read of `prefix` (None = no keys); bad entries skipped."""
    specs: dict[str, RouteSpec] = {}
    for entry in entries or []:
        key = entry.get("Key", "")
        app = key[len(prefix):] if key.startswith(prefix) else ""
        if not app or "/" in app:
            continue  # a folder marker or a deeper key: not a route
        try:
            raw = base64.b64decode(entry.get("Value") or "").decode("utf-8")
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise InvalidRoute("route value is not a JSON object")
            hostnames = value.get("hostnames", [])
            if not isinstance(hostnames, list):
                raise InvalidRoute("hostnames is not a list")
            spec = RouteSpec(
                app=app,
                service=value.get("service", app),
                hostnames=tuple(h.lower().rstrip(".") if isinstance(h, str) else h
                                for h in hostnames),
            )
            if value.get("app", app) != app:
                raise InvalidRoute(f"route at {key} names app {value.get('app')!r}")
        except (ValueError, InvalidName, InvalidRoute, UnicodeDecodeError) as exc:
            warn(f"ignoring route {key}: {exc}")
            continue
        specs[app] = spec
    return specs


def parse_passing_servers(entries: list[dict[str, Any]] | None, service: str, *,
                          warn: Warn = _log_warning) -> tuple[Server, ...]:
    """Routable servers from `/v1/health/service/<service>?passing=1&tag=live`.

    Only entries whose Service.Tags hold both `live` and `web` count: control instances and
    other process types never get traffic, whatever the query filtered.
    """
    servers: set[Server] = set()
    for entry in entries or []:
        svc = entry.get("Service") or {}
        tags = set(svc.get("Tags") or [])
        if not {"live", "web"} <= tags:
            continue
        if any(check.get("Status") != "passing" for check in entry.get("Checks") or []):
            continue
        address = svc.get("Address") or (entry.get("Node") or {}).get("Address")
        try:
            servers.add(Server(address, svc.get("Port")))
        except InvalidRoute as exc:
            warn(f"ignoring instance {svc.get('ID')!r} of {service}: {exc}")
    return tuple(sorted(servers))
