"""What the deployer asks of the world outside its store, each as a small protocol with the
real implementation beside it:

| protocol | asks | real implementation |
| --- | --- | --- |
| `HealthSource` | which instances pass their health check | the Consul client (`paas.consul`) |
| `RouterProbe` | wait until the router no longer routes some addresses | `RouterStatus`: the router's `/routes` |
| `InstanceLogs` | the last lines an instance printed | `AgentLogs`: the agent of its node |
| `InstanceLooks` | what an instance listens on, what its check said | `AgentLooks`: the agent of its node |
| `TestRunner` | run the integration test against a control instance | `ContainerTests`: a one-off container |
| `Clock` | what time it is, and sleeping | `LoopClock`: the event loop's monotonic clock |

The deployer's table-driven tests (tests/unit/test_deployer.py) pass fakes of these, so the
whole state machine runs in virtual time in milliseconds; the end-to-end tests run the real
ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

import aiohttp

from paas.builder.testrunner import TestOutcome, run_integration_test
from paas.controller.engine import Engine
from paas.controller.store import Store
from paas.listeners import InstanceLook

log = logging.getLogger("paas.controller.probes")


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class HealthSource(Protocol):
    async def service_health(self, app: str) -> list[dict[str, Any]]:
        """`[{"id", "address", "port", "tags", "meta", "status", "output"}]`; raises
        `paas.consul.ConsulUnavailable` when it cannot tell."""
        ...


class RouterProbe(Protocol):
    async def wait_unrouted(self, app: str, addresses: set[str]) -> None:
        """Return once the router sends no new request to `addresses` (or gives up)."""
        ...

    async def in_flight(self, app: str, addresses: set[str]) -> int | None:
        """Requests the router has in flight to `addresses`; None when it cannot tell."""
        ...


class InstanceLogs(Protocol):
    async def tail(self, instance_id: str, lines: int = 30) -> str:
        """The last lines the instance printed, or one sentence saying why there are none."""
        ...


class InstanceLooks(Protocol):
    async def look(self, instance_id: str) -> InstanceLook:
        """What the instance's node sees of its health (an empty one when it cannot tell)."""
        ...


class TestRunner(Protocol):
    async def run(self, *, image: str, command: str, target_url: str, env: dict[str, str],
                  labels: dict[str, str], timeout_s: float) -> TestOutcome: ...


class LoopClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class RouterStatus:
    """The router's admin `/routes`: what HAProxy routes right now. Without a router URL,
    wait a fixed grace after deregistering instead."""

    def __init__(self, *, session: aiohttp.ClientSession, url: str, grace: float,
                 clock: Clock, timeout: float = 15.0) -> None:
        self._session = session
        self._url = url.rstrip("/") + "/routes" if url else ""
        self._sessions_url = url.rstrip("/") + "/sessions" if url else ""
        self._grace = grace
        self._clock = clock
        self._timeout = timeout

    async def wait_unrouted(self, app: str, addresses: set[str]) -> None:
        if not self._url:
            await self._clock.sleep(self._grace)
            return
        deadline = self._clock.now() + self._timeout
        while self._clock.now() < deadline:
            try:
                async with self._session.get(self._url,
                                             timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    routes = await resp.json()
                servers = set(routes.get("apps", {}).get(app, {}).get("servers", []))
                if not servers & addresses:
                    return
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("router not answering while draining: %s", exc)
            await self._clock.sleep(0.05)
        log.warning("router still routes %s after %ss; stopping anyway", addresses,
                    self._timeout)

    async def in_flight(self, app: str, addresses: set[str]) -> int | None:
        if not self._sessions_url:
            return None
        try:
            async with self._session.get(self._sessions_url,
                                         timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status != 200:
                    return None
                found = (await resp.json()).get("apps", {}).get(app, {})
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("router not answering about requests in flight: %s", exc)
            return None
        return sum(int(n) for address, n in found.items() if address in addresses)


class _AgentCall:
    """A GET of an instance's route on the agent of its node, with the join token."""

    def __init__(self, *, store: Store, session: aiohttp.ClientSession, join_token: str) -> None:
        self._store = store
        self._session = session
        self._join_token = join_token

    async def _get(self, instance_id: str, route: str,
                   params: dict[str, str] | None = None) -> tuple[int, str]:
        """(HTTP status, body) of `GET <agent_url>/v1/instances/{id}/{route}`; raises
        LookupError when the instance's agent is unknown, and aiohttp's errors or
        TimeoutError when it does not answer."""
        inst = self._store.get_instance(instance_id)
        node = self._store.get_node(inst["node"]) if inst else None
        if node is None or not node["agent_url"]:
            raise LookupError("its node's agent is unknown")
        async with self._session.get(
                f"{node['agent_url']}/v1/instances/{instance_id}/{route}", params=params,
                headers={"Authorization": f"Bearer {self._join_token}"},
                timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status, await resp.text()


class AgentLogs(_AgentCall):
    """An instance's log tail, from `GET <agent_url>/v1/instances/{id}/logs` of its node."""

    async def tail(self, instance_id: str, lines: int = 30) -> str:
        try:
            status, text = await self._get(instance_id, "logs", {"tail": str(lines)})
        except (LookupError, aiohttp.ClientError, TimeoutError) as exc:
            return f"(no log for {instance_id}: {exc})"
        if status != 200:
            return f"(no log for {instance_id}: agent answered HTTP {status})"
        return text


class AgentLooks(_AgentCall):
    """What an instance's node sees of its health, from `GET <agent_url>/v1/instances/{id}/health`:
    what its container listens on and what its check said there."""

    async def look(self, instance_id: str) -> InstanceLook:
        try:
            status, text = await self._get(instance_id, "health")
            answer = json.loads(text) if status == 200 else None
        except (LookupError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("how %s looks is unknown: %s", instance_id, exc)
            return InstanceLook()
        return InstanceLook.from_view(answer)


class ContainerTests:
    """The integration test in a one-off container of the release's image
    (`paas.builder.testrunner`), off the event loop."""

    def __init__(self, *, engine: Engine) -> None:
        self._engine = engine

    async def run(self, *, image: str, command: str, target_url: str, env: dict[str, str],
                  labels: dict[str, str], timeout_s: float) -> TestOutcome:
        return await asyncio.to_thread(
            run_integration_test, docker_client=self._engine.client, image=image,
            command=command, target_url=target_url, env=env, labels=labels,
            timeout_s=timeout_s)
