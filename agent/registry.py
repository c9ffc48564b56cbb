"""Registers this node's web instances, with HTTP health checks, in the local Consul agent.

The service layout is the contract in docs/architecture.md: ID = instance id, Name = app, the node
address and the container's host port, tags `[role, vN, process]` (+ extra tags such as
`stable`), `paas_*` meta, and a check that starts critical: HTTP on the instance's health path,
or TCP on its port when the app names no path.
Only `web` processes get a service. `registered()` lists the services this agent made (filtered by
`paas_cluster`/`paas_node` meta) so the reconciler can compare them with what should be there;
that comparison is also what re-registers everything after a Consul agent lost its state.

The HTTP calls are `paas.consul.ConsulClient`'s: any failure raises its `ConsulUnavailable`, and
the agent's reconcile loop tries again on its next pass.
"""

from __future__ import annotations

from typing import Any

from agent.assignments import Assignment, service_tags
from paas.consul import ConsulClient, Service

DEREGISTER_CRITICAL_AFTER = "10m"


def duration(seconds: float) -> str:
    """A Go duration string for Consul: 1 -> "1s", 0.5 -> "500ms"."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{max(1, int(round(seconds * 1000)))}ms"


def check_id(instance_id: str) -> str:
    """The id of an instance's health check in its Consul agent."""
    return f"service:{instance_id}"


def service_meta(assignment: Assignment, *, cluster: str, node: str) -> dict[str, str]:
    return {
        "paas_cluster": cluster,
        "paas_node": node,
        "paas_app": assignment.app,
        "paas_release": str(assignment.release),
        "paas_process": assignment.process,
        "paas_instance": assignment.id,
        "paas_role": assignment.role,
        # Prometheus scrapes the instances that have it (templates/prometheus.yml.j2).
        **({"metrics_path": assignment.metrics_path} if assignment.metrics_path else {}),
    }


def service_definition(assignment: Assignment, *, cluster: str, node: str, address: str,
                       host_port: int) -> dict[str, Any]:
    """The body of `PUT /v1/agent/service/register` for a running web instance."""
    health = assignment.health
    probe = ({"Name": f"{assignment.app} {assignment.id} HTTP {health.path}",
              "HTTP": f"http://{address}:{host_port}{health.path}", "Method": "GET"}
             if health.path else
             {"Name": f"{assignment.app} {assignment.id} TCP", "TCP": f"{address}:{host_port}"})
    return {
        "ID": assignment.id,
        "Name": assignment.app,
        "Address": address,
        "Port": host_port,
        "Tags": list(service_tags(assignment)),
        "Meta": service_meta(assignment, cluster=cluster, node=node),
        "Check": {
            "CheckID": check_id(assignment.id),
            **probe,
            "Interval": duration(health.interval_s),
            "Timeout": duration(health.timeout_s),
            "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
            "Status": "critical",
        },
    }


class ConsulRegistry:
    """This node's services in its local Consul agent (`/v1/agent/...` endpoints only)."""

    def __init__(self, *, consul: ConsulClient, cluster: str, node: str, address: str) -> None:
        self.consul = consul
        self.cluster = cluster
        self.node = node
        self.address = address

    async def register(self, assignment: Assignment, *, host_port: int) -> None:
        """Register (or update) the instance's service and health check."""
        body = service_definition(assignment, cluster=self.cluster, node=self.node,
                                  address=self.address, host_port=host_port)
        await self.consul.register_service(
            service_id=body["ID"], name=body["Name"], address=body["Address"],
            port=body["Port"], tags=body["Tags"], meta=body["Meta"], check=body["Check"])

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance's service (and its check); no error if it is not registered."""
        await self.consul.deregister_service(instance_id)

    async def check_output(self, instance_id: str) -> str | None:
        """What the instance's health check said last, None if it has none here."""
        return await self.consul.agent_check_output(check_id(instance_id))

    async def registered(self) -> dict[str, Service]:
        """The services this agent registered, by instance id."""
        return {sid: svc for sid, svc in (await self.consul.agent_services()).items()
                if svc.meta.get("paas_cluster") == self.cluster
                and svc.meta.get("paas_node") == self.node}

    async def close(self) -> None:
        await self.consul.close()
