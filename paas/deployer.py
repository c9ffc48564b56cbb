"""Runs deployments: the rolling replacement of an app's instances by a release's.

The deployer persists each step in the store before acting on it. It only ever changes
desired state (rows in `instances`); agents converge on it. For each process type it starts
new instances in batches of the release's `max_parallel`, waits until each batch is healthy
(passing in Consul for `min_healthy_time`, or running for non-web processes), then drains as
many old instances (deregister, wait until the router stops routing them, stop). Any failure
removes the new instances and leaves the old release serving.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from paas import scheduler
from paas.consul import ConsulClient, ConsulUnavailable
from paas.settings import ControllerSettings
from paas.store import Store

log = logging.getLogger("paas.deployer")

DEFAULT_CPU = 0.1
DEFAULT_MEMORY_MB = 128
ROUTED_PROCESS = "web"


class DeployFailed(Exception):
    """A step failed; `step` names it and the message says why."""

    def __init__(self, step: str, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.log_tail = log_tail


def new_instance_id(app: str, release: int, process: str) -> str:
    return f"{app}-v{release}-{process}-{secrets.token_hex(3)}"


@dataclass
class Deployer:
    store: Store
    consul: ConsulClient
    settings: ControllerSettings
    session: aiohttp.ClientSession
    node_is_ready: Any  # Callable[[dict], bool]

    # --- views ------------------------------------------------------------------------------
    def cluster_view(self, *, retiring: set[str] = frozenset()) -> list[scheduler.Node]:  # type: ignore[assignment]
        """The scheduler's view: ready nodes and what they hold. Instances in `retiring`
        count against capacity but not towards spreading (they are about to go)."""
        by_node: dict[str, list[scheduler.Instance]] = {}
        for inst in self.store.list_instances():
            app = inst["app"] + ("~retiring" if inst["id"] in retiring else "")
            by_node.setdefault(inst["node"], []).append(scheduler.Instance(
                app=app, process=inst["process"], cpu=DEFAULT_CPU,
                memory_mb=DEFAULT_MEMORY_MB, instance_id=inst["id"]))
        return [scheduler.Node(name=n["name"], address=n["address"], cpu=n["cpu"],
                               memory_mb=n["memory_mb"], labels=n["labels"],
                               ready=self.node_is_ready(n),
                               instances=tuple(by_node.get(n["name"], ())))
                for n in self.store.list_nodes()]

    # --- the run ----------------------------------------------------------------------------
    async def run(self, dep_id: int) -> None:
        dep = self.store.get_deployment(dep_id)
        assert dep is not None
        app, version = dep["app"], dep["release"]
        release = self.store.get_release(app, version)
        started = time.monotonic()
        new_ids: list[str] = []
        try:
            if release is None:
                raise DeployFailed("pending", f"release v{version} of {app} does not exist")
            self.store.update_deployment(dep_id, step="rollout")
            for process, count in sorted(dep["replicas"].items()):
                new_ids += await self._roll_process(dep_id, release, process, int(count))
            self.store.update_deployment(dep_id, step="finish")
            self.store.set_app_fields(app, scale=dep["replicas"])
            self.store.update_deployment(dep_id, status="succeeded", step="done",
                                         reason=f"took {time.monotonic() - started:.1f}s")
            log.info("deployment %s of %s v%s succeeded", dep_id, app, version)
        except DeployFailed as exc:
            log.warning("deployment %s of %s failed at %s: %s", dep_id, app, exc.step, exc.reason)
            self.store.set_desired(new_ids + self._deployment_instances(dep_id), "stopped")
            self.store.update_deployment(dep_id, status="failed", step=exc.step,
                                         reason=exc.reason, log_tail=exc.log_tail)
        except asyncio.CancelledError:
            if self.store.get_app(app) is None:
                self.store.update_deployment(dep_id, status="failed", step="cancelled",
                                             reason="the app was deleted")
            raise

    def _deployment_instances(self, dep_id: int) -> list[str]:
        return [i["id"] for i in self.store.list_instances() if i["deployment_id"] == dep_id]

    async def _roll_process(self, dep_id: int, release: dict[str, Any], process: str,
                            count: int) -> list[str]:
        app, version = release["app"], release["version"]
        old = [i["id"] for i in self.store.list_instances(app)
               if i["process"] == process and i["role"] == "live" and i["desired"] == "running"]
        policy = release["policy"]
        batch = max(1, int(policy.get("max_parallel", 1)))
        created: list[str] = []
        retiring = set(old)
        while len(created) < count:
            size = min(batch, count - len(created))
            nodes = self.cluster_view(retiring=retiring)
            plan = scheduler.place(nodes=nodes, request=scheduler.PlacementRequest(
                app=app, process=process, count=size, cpu=DEFAULT_CPU,
                memory_mb=DEFAULT_MEMORY_MB))
            if plan.unplaced:
                raise DeployFailed("rollout", f"cannot place {plan.unplaced} {process} "
                                   f"instance(s): {plan.reason}")
            rows = [{"id": new_instance_id(app, version, process), "app": app,
                     "release": version, "process": process, "role": "live", "node": node,
                     "deployment_id": dep_id} for node in plan.placements]
            self.store.add_instances(rows)
            ids = [r["id"] for r in rows]
            created += ids
            await self.wait_healthy(app, ids, process=process, policy=policy)
            await self.drain(app, old[:size])
            old = old[size:]
        await self.drain(app, old)
        return created

    # --- health -----------------------------------------------------------------------------
    async def wait_healthy(self, app: str, ids: list[str], *, process: str,
                           policy: dict[str, Any]) -> None:
        """Return once every instance in `ids` has been healthy for `min_healthy_time`;
        raise DeployFailed at `healthy_deadline` or when one exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(policy.get("healthy_deadline",
                                                  self.settings.healthy_deadline))
        min_time = float(policy.get("min_healthy_time", 1.0))
        healthy_since: dict[str, float] = {}
        while True:
            now = loop.time()
            passing = await self._passing(app, ids, process)
            for instance_id in ids:
                if instance_id in passing:
                    healthy_since.setdefault(instance_id, now)
                else:
                    healthy_since.pop(instance_id, None)
            if len(healthy_since) == len(ids) and all(
                    now - t >= min_time for t in healthy_since.values()):
                return
            for instance_id in ids:
                inst = self.store.get_instance(instance_id)
                if inst is not None and inst["state"] == "exited":
                    raise DeployFailed("rollout", f"instance {instance_id} exited")
            if now >= deadline:
                late = [i for i in ids if i not in healthy_since]
                raise DeployFailed("rollout", f"instance(s) {', '.join(late) or ids[0]} did not "
                                   f"stay healthy within {policy.get('healthy_deadline')}s")
            await asyncio.sleep(0.2)

    async def _passing(self, app: str, ids: list[str], process: str) -> set[str]:
        if process != ROUTED_PROCESS:
            return {i for i in ids
                    if (inst := self.store.get_instance(i)) and inst["state"] == "running"}
        try:
            services = await self.consul.service_health(app)
        except ConsulUnavailable as exc:
            log.warning("waiting for health: %s", exc)
            return set()
        return {s["id"] for s in services if s["status"] == "passing" and s["id"] in ids}

    # --- draining ---------------------------------------------------------------------------
    async def drain(self, app: str, ids: list[str]) -> None:
        """Take instances out of routing, wait until the router no longer sends them traffic,
        then stop them."""
        if not ids:
            return
        addresses = self._addresses(ids)
        self.store.set_desired(ids, "draining")
        await self._wait_unrouted(app, addresses)
        self.store.set_desired(ids, "stopped")

    def _addresses(self, ids: list[str]) -> set[str]:
        nodes = {n["name"]: n["address"] for n in self.store.list_nodes()}
        out = set()
        for instance_id in ids:
            inst = self.store.get_instance(instance_id)
            if inst and inst["host_port"] and inst["node"] in nodes:
                out.add(f"{nodes[inst['node']]}:{inst['host_port']}")
        return out

    async def _wait_unrouted(self, app: str, addresses: set[str], timeout: float = 15.0) -> None:
        if not self.settings.router_url:
            await asyncio.sleep(self.settings.drain_grace)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        url = self.settings.router_url.rstrip("/") + "/routes"
        while loop.time() < deadline:
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    routes = await resp.json()
                servers = set(routes.get("apps", {}).get(app, {}).get("servers", []))
                if not servers & addresses:
                    return
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("router not answering while draining: %s", exc)
            await asyncio.sleep(0.1)
        log.warning("router still routes %s after %ss; stopping anyway", addresses, timeout)
