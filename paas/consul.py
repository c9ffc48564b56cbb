"""The controller's narrow Consul client: route keys in KV and the health of an app's
instances. Plain aiohttp against Consul's HTTP API; every failure becomes `ConsulUnavailable`."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp

from paas.names import validate_app_name

ROUTES_PREFIX = "paas/routes/"


class ConsulUnavailable(Exception):
    """Consul did not answer or answered with an error."""


class ConsulClient:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self._url = url.rstrip("/")
        self._session = session

    async def _request(self, method: str, path: str, *, data: Any = None,
                       params: dict[str, str] | None = None) -> Any:
        try:
            async with self._session.request(
                    method, self._url + path, data=data, params=params,
                    timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status == 404:
                    return None
                if resp.status >= 400:
                    raise ConsulUnavailable(f"consul {method} {path}: HTTP {resp.status}")
                text = await resp.text()
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ConsulUnavailable(f"consul {method} {path}: {exc}") from exc

    async def put_route(self, app: str, hostnames: list[str]) -> None:
        validate_app_name(app)
        body = json.dumps({"app": app, "service": app, "hostnames": hostnames})
        await self._request("PUT", f"/v1/kv/{ROUTES_PREFIX}{app}", data=body)

    async def delete_route(self, app: str) -> None:
        validate_app_name(app)
        await self._request("DELETE", f"/v1/kv/{ROUTES_PREFIX}{app}")

    async def list_routes(self) -> dict[str, dict[str, Any]]:
        """Route keys in KV: app -> decoded value (bad values are skipped)."""
        rows = await self._request("GET", f"/v1/kv/{ROUTES_PREFIX}", params={"recurse": "1"})
        routes: dict[str, dict[str, Any]] = {}
        for row in rows or []:
            try:
                routes[row["Key"][len(ROUTES_PREFIX):]] = json.loads(
                    base64.b64decode(row.get("Value") or b""))
            except (ValueError, KeyError):
                continue
        return routes

    async def put_kv(self, key: str, value: str) -> None:
        await self._request("PUT", f"/v1/kv/{key}", data=value)

    async def delete_kv(self, key: str, *, recurse: bool = False) -> None:
        await self._request("DELETE", f"/v1/kv/{key}", params={"recurse": "1"} if recurse else None)

    async def service_health(self, app: str) -> list[dict[str, Any]]:
        """Every registered instance of the app's service with its aggregated check status:
        `[{"id", "address", "port", "tags", "meta", "status"}]` (status passing|warning|critical)."""
        validate_app_name(app)
        rows = await self._request("GET", f"/v1/health/service/{app}")
        out = []
        for row in rows or []:
            svc = row["Service"]
            statuses = [c["Status"] for c in row.get("Checks", [])]
            status = ("critical" if "critical" in statuses
                      else "warning" if "warning" in statuses else "passing")
            out.append({"id": svc["ID"], "address": svc["Address"], "port": svc["Port"],
                        "tags": svc.get("Tags") or [], "meta": svc.get("Meta") or {},
                        "status": status})
        return out
