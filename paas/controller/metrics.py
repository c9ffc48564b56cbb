"""The controller's own Prometheus metrics, in a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deployments = Counter("paas_deployments_total", "Deployments by outcome",
                                   ["status"], registry=self.registry)
        self.releases = Counter("paas_releases_total", "Releases made", registry=self.registry)
        self.builds_failed = Counter("paas_builds_failed_total", "Builds that failed",
                                     registry=self.registry)
        self.nodes_ready = Gauge("paas_nodes_ready", "Nodes with a recent heartbeat",
                                 registry=self.registry)
