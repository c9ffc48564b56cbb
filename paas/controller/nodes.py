"""Nodes and instances: agents register, heartbeat and long-poll their assignments; nodes
are listed and drained; between deployments the reconcile replaces what a lost node ran.

`Heartbeats` knows when each node was last heard from (in memory: after a controller restart
every node gets a fresh grace period); `Nodes` does the operations.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from paas.builder.appconfig import resources_of
from paas.controller import reconciler, scheduler
from paas.controller.deployments import Deployments
from paas.controller.longpoll import AssignmentWaiters
from paas.controller.metrics import Metrics
from paas.controller.placement import (CONTAINER_PORT, cluster_view, new_instance_id,
                                       placement_request)
from paas.controller.store import DeploymentRunning, Store
from paas.controller.views import deployment_view, require_app, require_node
from paas.errors import BadRequest, Conflict

log = logging.getLogger("paas.controller.nodes")

INSTANCE_STATES = {"pending", "starting", "running", "exited", "missing", "stopping"}


class Heartbeats:
    """When each node was last heard from; a node is ready while that is recent."""

    def __init__(self, *, down_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._down_after = down_after
        self._clock = clock
        self._seen: dict[str, float] = {}

    def beat(self, name: str) -> None:
        self._seen[name] = self._clock()

    def is_ready(self, node: dict[str, Any]) -> bool:
        seen = self._seen.get(node["name"])
        return seen is not None and self._clock() - seen <= self._down_after

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


@dataclass(kw_only=True)
class Nodes:
    store: Store
    waiters: AssignmentWaiters
    heartbeats: Heartbeats
    deployments: Deployments
    metrics: Metrics

    def __post_init__(self) -> None:
        # After a controller restart every node gets a fresh grace period.
        for node in self.store.list_nodes():
            self.heartbeats.beat(node["name"])

    def reconcile_once(self) -> reconciler.Plan:
        """Stop instances on lost nodes and place replacements so every app runs its scale;
        what cannot be placed is recorded as pending with the scheduler's reason."""
        ready = {n["name"] for n in self.store.list_nodes() if self.heartbeats.is_ready(n)}
        deploying = {d["app"] for d in self.store.running_deployments()}
        apps = self.store.list_apps()
        plan = reconciler.reconcile(
            apps=[reconciler.AppView(name=a["name"], live_release=a["live_release"],
                                     scale=a["scale"], deploying=a["name"] in deploying)
                  for a in apps],
            instances=[reconciler.InstanceView(
                id=i["id"], app=i["app"], release=i["release"], process=i["process"],
                role=i["role"], node=i["node"], desired=i["desired"])
                for i in self.store.list_instances()],
            ready_nodes=ready)
        if plan.lost:
            self.store.set_desired(list(plan.lost), "stopped")
            for inst in plan.lost:
                log.warning("instance %s is lost with its node", inst)
        pending: dict[str, dict[str, Any]] = {}
        for p in plan.place:
            release = self.store.get_release(p.app, p.release)
            if release is None:
                continue
            splan = scheduler.place(nodes=cluster_view(self.store,
                                                       is_ready=self.heartbeats.is_ready),
                                    request=placement_request(p.app, p.process, p.count,
                                                              release["policy"]))
            rows = [{"id": new_instance_id(p.app, p.release, p.process), "app": p.app,
                     "release": p.release, "process": p.process, "role": "live", "node": node}
                    for node in splan.placements]
            if rows:
                self.store.add_instances(rows)
                placed = ", ".join(f"{r['id']} on {r['node']}" for r in rows)
                self.store.add_event(app=p.app, deployment_id=None, step="reschedule",
                                     message=f"placed {placed}")
            if splan.unplaced:
                pending.setdefault(p.app, {})[p.process] = {"count": splan.unplaced,
                                                            "reason": splan.reason}
        for a in apps:
            if a["name"] not in deploying and a["pending"] != pending.get(a["name"], {}):
                self.store.set_app_fields(a["name"], pending=pending.get(a["name"], {}))
        return plan

    # --- instances and nodes ----------------------------------------------------------------
    def list_instances(self, app: str) -> list[dict[str, Any]]:
        require_app(self.store, app)
        nodes = {n["name"]: n for n in self.store.list_nodes()}
        out = []
        for i in self.store.list_instances(app):
            node = nodes.get(i["node"])
            address = (f"{node['address']}:{i['host_port']}"
                       if node is not None and i["host_port"] else None)
            out.append({"id": i["id"], "release": i["release"], "process": i["process"],
                        "role": i["role"], "node": i["node"], "desired": i["desired"],
                        "state": i["state"], "address": address,
                        "container_id": i["container_id"], "restarts": i["restarts"],
                        "reason": i["error"]})
        app_row = require_app(self.store, app)
        for process, info in sorted(app_row["pending"].items()):
            for _ in range(int(info["count"])):
                out.append({"id": None, "release": app_row["live_release"], "process": process,
                            "role": "live", "node": None, "desired": "running",
                            "state": "pending", "address": None, "container_id": None,
                            "restarts": 0, "reason": info["reason"]})
        return out

    def listing(self) -> list[dict[str, Any]]:
        """Each node with its capacity and what its instances reserve of it (the scheduler's
        view: CPU cores and MB of memory)."""
        counts: dict[str, int] = {}
        for i in self.store.list_instances():
            counts[i["node"]] = counts.get(i["node"], 0) + 1
        held = {v.name: v for v in cluster_view(self.store, is_ready=self.heartbeats.is_ready)}
        nodes = []
        for n in self.store.list_nodes():
            view = held.get(n["name"])
            allocated = {"cpu": round(sum(i.cpu for i in view.instances), 3) if view else 0.0,
                         "memory_mb": sum(i.memory_mb for i in view.instances) if view else 0}
            nodes.append({"name": n["name"], "address": n["address"], "cpu": n["cpu"],
                          "memory_mb": n["memory_mb"], "labels": n["labels"],
                          "status": ("down" if not self.heartbeats.is_ready(n)
                                     else "draining" if n["draining"] else "ready"),
                          "instances": counts.get(n["name"], 0), "allocated": allocated,
                          "last_heartbeat": n["last_heartbeat"]})
        self.metrics.nodes_ready.set(sum(1 for n in nodes if n["status"] == "ready"))
        return nodes

    async def drain(self, name: str, drain: bool) -> dict[str, Any]:
        """Mark a node (in)eligible; draining moves its live instances elsewhere through a
        deployment per app, under the rolling rules (replacements healthy first)."""
        require_node(self.store, name)
        self.store.set_node_draining(name, drain)
        started: list[dict[str, Any]] = []
        if drain:
            apps = sorted({i["app"] for i in self.store.list_instances()
                           if i["node"] == name and i["role"] == "live"})
            for app in apps:
                row = self.store.get_app(app)
                if row is None or row["live_release"] is None:
                    continue
                try:
                    dep = self.store.create_deployment(
                        app=app, release=row["live_release"], replicas=row["scale"],
                        kind="drain", options={"skip_checks": True, "avoid_node": name})
                except DeploymentRunning as exc:
                    raise Conflict(f"deployment {exc.dep_id} of {app!r} is running; drain "
                                   "the node again when it is done",
                                   deployment_id=exc.dep_id) from None
                self.deployments.start(dep["id"])
                started.append(deployment_view(dep))
        node = next(n for n in self.listing() if n["name"] == name)
        return {"node": node, "deployments": started}

    def remove(self, name: str) -> dict[str, Any]:
        """Take a node out of the cluster once its agent is down (stopped by `paas host
        remove`, or its machine lost). Its instances were moved by a drain, or are being
        replaced since it went down; the records left on it are forgotten. While the agent
        still reports, the node would only register again: refused."""
        node = require_node(self.store, name)
        if self.heartbeats.is_ready(node):
            raise Conflict(f"node {name!r} is still up: stop its agent first (on that machine: "
                           "paas host remove), then remove it")
        forgotten = self.store.remove_node(name)
        self.heartbeats.forget(name)
        log.info("node %s removed (%d instance record(s) forgotten)", name, forgotten)
        return {"removed": name, "instances_forgotten": forgotten}

    def register(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        address = body.get("address")
        try:
            ipaddress.IPv4Address(address)  # type: ignore[arg-type]
        except (ipaddress.AddressValueError, TypeError, ValueError):
            raise BadRequest("address must be the node's IPv4 address") from None
        try:
            cpu = float(body.get("cpu", 1))
            memory_mb = int(body.get("memory_mb", 1024))
        except (TypeError, ValueError):
            raise BadRequest("cpu and memory_mb must be numbers") from None
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise BadRequest("labels must be an object of strings")
        consul_url = str(body.get("consul_url") or f"http://{address}:8500")
        agent_url = body.get("agent_url") or ""
        if not isinstance(agent_url, str) or agent_url and not agent_url.startswith("http://"):
            raise BadRequest("agent_url must be an http:// URL")
        node = self.store.upsert_node(name=name, address=address, cpu=cpu,
                                      memory_mb=memory_mb, labels=labels, consul_url=consul_url,
                                      agent_url=agent_url)
        self.heartbeats.beat(name)
        return node

    def heartbeat(self, name: str, body: dict[str, Any]) -> None:
        require_node(self.store, name)
        reports = body.get("instances", [])
        if not isinstance(reports, list) or not all(
                isinstance(r, dict) and isinstance(r.get("id"), str)
                and r.get("state") in INSTANCE_STATES for r in reports):
            raise BadRequest("instances must be a list of {id, state} objects")
        for r in reports:
            if not isinstance(r.get("error"), (str, type(None))):
                raise BadRequest("an instance's error must be a string or null")
            for key in ("pull_s", "ran_s"):
                value = r.get(key)
                if value is not None and (isinstance(value, bool)
                                          or not isinstance(value, (int, float))
                                          or not 0 <= value < 10 ** 9):
                    raise BadRequest(f"an instance's {key} must be a number of seconds or null")
            code = r.get("exit_code")
            if code is not None and (isinstance(code, bool) or not isinstance(code, int)
                                     or not -(2 ** 31) <= code < 2 ** 31):
                raise BadRequest("an instance's exit_code must be an integer or null")
            r["error"] = r["error"][:500] if r.get("error") else None
        self.heartbeats.beat(name)
        self.store.report_instances(name, reports)

    async def assignments(self, name: str, index: int, wait: float) -> dict[str, Any]:
        require_node(self.store, name)

        def current() -> int:
            node = self.store.get_node(name)
            return node["assign_index"] if node else 0

        new_index = await self.waiters.wait_for(current, index, wait)
        out = []
        for a in self.store.node_assignments(name):
            command = a["processes"].get(a["process"])
            res = resources_of(a["policy"], a["process"])
            out.append({
                "id": a["id"], "app": a["app"], "release": a["release"], "process": a["process"],
                "role": a["role"], "desired": a["desired"],
                "image": a["pushed_image"] or a["image"],
                "tags": ["stable"] if a["release"] == a["stable_release"] else [],
                "command": ["/bin/sh", "-c", command] if command else None,
                "env": a["config"], "port": CONTAINER_PORT,
                "memory_mb": res.memory_mb, "cpu": res.cpu, "health": a["health"],
                "metrics_path": a["metrics_path"],
                "stop_timeout_s": a["policy"].get("stop_timeout", 10)})
        return {"index": new_index, "instances": out,
                "stopping": self.store.count_stopping(name)}
