"""The agent's client of the controller's node API: register, heartbeat, long-poll assignments.

Every call carries `Authorization: Bearer <join token>`. The long-poll's client timeout is the
requested wait plus a margin, so a controller that holds the request for the full wait is not
mistaken for a dead one. Errors are typed by what the agent should do:

- `ControllerUnreachable`: connection refused, timeout or 5xx: back off and retry.
- `Unauthorized`: 401/403: the join token is wrong; the agent logs it and retries slowly.
- `NodeUnknown`: 404 on a node route: the controller forgot this node, register again.
- `ControllerError`: anything else (other 4xx, a malformed answer).
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import aiohttp

from agent.assignments import Assignments, InvalidAssignment, parse_assignments

LONG_POLL_MARGIN_S = 10.0


class ControllerError(Exception):
    """The controller answered something unusable; the message says what."""


class ControllerUnreachable(ControllerError):
    """The controller cannot be reached or is failing (connection, timeout, 5xx): retry later."""


class Unauthorized(ControllerError):
    """The controller rejected the join token (401/403): fix the token."""


class NodeUnknown(ControllerError):
    """The controller does not know this node (404): register again."""


class ControllerClient:
    """One node's session with the controller."""

    def __init__(self, *, base_url: str, node: str, token: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.node = node
        self.token = token
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def _node_path(self) -> str:
        return f"/v1/nodes/{quote(self.node, safe='')}"

    async def register(self, *, address: str, cpu: float, memory_mb: int,
                       labels: Mapping[str, str], consul_url: str,
                       agent_url: str = "") -> dict[str, Any]:
        """`PUT /v1/nodes/{node}`; returns the controller's node record. `agent_url` is the
        agent's admin server, where the controller reads instance logs."""
        body = {"address": address, "cpu": cpu, "memory_mb": memory_mb, "labels": dict(labels),
                "consul_url": consul_url, "agent_url": agent_url}
        data = await self._request("PUT", self._node_path, json=body)
        node = data.get("node") if isinstance(data, dict) else None
        return node if isinstance(node, dict) else {}

    async def heartbeat(self, instances: Sequence[Mapping[str, Any]], *,
                        index: int | None = None) -> None:
        """`POST /v1/nodes/{node}/heartbeat` with the states of the node's instances."""
        body: dict[str, Any] = {"instances": [dict(i) for i in instances]}
        if index is not None:
            body["index"] = index
        await self._request("POST", f"{self._node_path}/heartbeat", json=body)

    async def assignments(self, *, index: int, wait_s: float) -> Assignments | None:
        """Long-poll `GET /v1/nodes/{node}/assignments?index=N&wait=W`.

        Returns the assignments (possibly unchanged, when the wait ran out), or None if the
        controller answered 204/304 (nothing new).
        """
        params = {"index": str(index), "wait": str(int(wait_s) if float(wait_s).is_integer()
                                                   else wait_s)}
        data = await self._request("GET", f"{self._node_path}/assignments", params=params,
                                   timeout_s=wait_s + LONG_POLL_MARGIN_S)
        if data is None:
            return None
        try:
            return parse_assignments(data)
        except InvalidAssignment as exc:
            raise ControllerError(f"bad assignments from the controller: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, *, json: Any = None,
                       params: Mapping[str, str] | None = None,
                       timeout_s: float | None = None) -> Any:
        url = self.base_url + path
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            async with self._get_session().request(
                    method, url, json=json, params=params, timeout=timeout,
                    headers={"Authorization": f"Bearer {self.token}"}) as resp:
                text = await resp.text()
                if resp.status in (204, 304):
                    return None
                if resp.status in (401, 403):
                    raise Unauthorized(f"controller rejected the join token ({resp.status}) "
                                       f"on {method} {path}")
                if resp.status == 404:
                    raise NodeUnknown(f"controller does not know node {self.node} "
                                      f"({method} {path}: 404 {_short(text)})")
                if resp.status >= 500:
                    raise ControllerUnreachable(
                        f"controller failing: {method} {path}: {resp.status} {_short(text)}")
                if resp.status >= 400:
                    raise ControllerError(f"{method} {path}: {resp.status} {_short(text)}")
                try:
                    return await resp.json(content_type=None)
                except ValueError:
                    raise ControllerError(f"{method} {path}: answer is not JSON") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ControllerUnreachable(
                f"controller at {self.base_url} unreachable: {exc.__class__.__name__} {exc}"
                .strip()) from None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session


def _short(text: str, limit: int = 200) -> str:
    text = text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
