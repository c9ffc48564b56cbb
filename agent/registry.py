"""Registers this node's web instances, with HTTP health checks, in the local Consul agent.

The service layout is the contract in docs/architecture.md: ID = instance id, Name = app, the node
address and the container's host port, tags `[role, vN, process]` (+ extra tags such as
`stable`), `paas_*` meta, and an HTTP check on the instance's health path that starts critical.
Only `web` processes get a service. `registered()` lists the services this agent made (filtered by
`paas_cluster`/`paas_node` meta) so the reconciler can compare them with what should be there;
that comparison is also what re-registers everything after a Consul agent lost its state.

Consul being unreachable raises `ConsulUnavailable` after a couple of quick retries; the agent's
loop backs off and tries again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote

import aiohttp

from agent.assignments import Assignment, service_tags

DEREGISTER_CRITICAL_AFTER = "10m"


class RegistryError(Exception):
    """Base of the registry's errors."""


class ConsulUnavailable(RegistryError):
    """The local Consul agent cannot be reached or is failing: retry later."""


class ConsulRejected(RegistryError):
    """Consul refused the request (4xx): the message is Consul's answer; retrying won't help."""


@dataclass(frozen=True)
class RegisteredService:
    """A service this agent registered, as Consul's agent reports it."""

    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)


def duration(seconds: float) -> str:
    """A Go duration string for Consul: 1 -> "1s", 0.5 -> "500ms"."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{max(1, int(round(seconds * 1000)))}ms"


def service_meta(assignment: Assignment, *, cluster: str, node: str) -> dict[str, str]:
    return {
        "paas_cluster": cluster,
        "paas_node": node,
        "paas_app": assignment.app,
        "paas_release": str(assignment.release),
        "paas_process": assignment.process,
        "paas_instance": assignment.id,
        "paas_role": assignment.role,
    }


def service_definition(assignment: Assignment, *, cluster: str, node: str, address: str,
                       host_port: int) -> dict[str, Any]:
    """The body of `PUT /v1/agent/service/register` for a running web instance."""
    health = assignment.health
    return {
        "ID": assignment.id,
        "Name": assignment.app,
        "Address": address,
        "Port": host_port,
        "Tags": list(service_tags(assignment)),
        "Meta": service_meta(assignment, cluster=cluster, node=node),
        "Check": {
            "CheckID": f"service:{assignment.id}",
            "Name": f"{assignment.app} {assignment.id} HTTP {health.path}",
            "HTTP": f"http://{address}:{host_port}{health.path}",
            "Method": "GET",
            "Interval": duration(health.interval_s),
            "Timeout": duration(health.timeout_s),
            "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
            "Status": "critical",
        },
    }


class ConsulRegistry:
    """The agent's client of its local Consul agent (`/v1/agent/...` endpoints only)."""

    def __init__(self, *, consul_url: str, cluster: str, node: str, address: str,
                 timeout_s: float = 5.0, retries: int = 2, retry_delay_s: float = 0.2) -> None:
        self.consul_url = consul_url.rstrip("/")
        self.cluster = cluster
        self.node = node
        self.address = address
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self._session: aiohttp.ClientSession | None = None

    async def register(self, assignment: Assignment, *, host_port: int) -> None:
        """Register (or update) the instance's service and health check."""
        body = service_definition(assignment, cluster=self.cluster, node=self.node,
                                  address=self.address, host_port=host_port)
        await self._request("PUT", "/v1/agent/service/register", json=body)

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance's service (and its check); no error if it is not registered."""
        await self._request("PUT", f"/v1/agent/service/deregister/{quote(instance_id, safe='')}",
                            missing_ok=True)

    async def registered(self) -> dict[str, RegisteredService]:
        """The services this agent registered, by instance id."""
        data = await self._request("GET", "/v1/agent/services")
        found: dict[str, RegisteredService] = {}
        for sid, svc in (data or {}).items():
            meta = svc.get("Meta") or {}
            if meta.get("paas_cluster") != self.cluster or meta.get("paas_node") != self.node:
                continue
            found[sid] = RegisteredService(
                id=sid, name=svc.get("Service", ""), address=svc.get("Address", ""),
                port=int(svc.get("Port") or 0), tags=tuple(svc.get("Tags") or ()),
                meta=dict(meta))
        return found

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, *, json: Any = None,
                       missing_ok: bool = False) -> Any:
        url = self.consul_url + path
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_delay_s * 2 ** (attempt - 1))
            try:
                async with self._get_session().request(method, url, json=json) as resp:
                    text = await resp.text()
                    if missing_ok and (resp.status == 404 or "unknown service" in text.lower()):
                        return None  # Consul 1.8 answers 500 "Unknown service ID" here
                    if resp.status >= 500:
                        last = ConsulUnavailable(f"Consul {method} {path}: {resp.status} {text}")
                        continue
                    if resp.status >= 400:
                        raise ConsulRejected(f"Consul {method} {path}: {resp.status} {text}")
                    if resp.content_type == "application/json" and text:
                        return await resp.json()
                    return None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                last = ConsulUnavailable(f"Consul at {self.consul_url} unreachable: "
                                         f"{exc.__class__.__name__} {exc}".strip())
        assert last is not None
        raise last

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session
