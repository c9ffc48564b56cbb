"""Prometheus metrics of one router, in a registry of its own (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class RouterMetrics:
    """The router's counters and gauges; `/metrics` serves `render()`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reloads = Counter(
            "paas_router_reloads", "HAProxy reloads (apps, hostnames or slot capacity changed)",
            registry=r)
        self.runtime_updates = Counter(
            "paas_router_runtime_updates", "Applies done through the runtime API, no reload",
            registry=r)
        self.runtime_commands = Counter(
            "paas_router_runtime_commands", "Runtime API commands sent to HAProxy", registry=r)
        self.apply_errors = Counter(
            "paas_router_apply_errors", "Applies that failed and will be retried", registry=r)
        self.haproxy_restarts = Counter(
            "paas_router_haproxy_restarts", "HAProxy restarts after it exited unexpectedly",
            registry=r)
        self.consul_errors = Counter(
            "paas_router_consul_errors", "Failed Consul requests", registry=r)
        self.consul_up = Gauge(
            "paas_router_consul_up", "1 while Consul answers, 0 during an outage", registry=r)
        self.generation = Gauge(
            "paas_router_generation", "Generation of the routes HAProxy serves", registry=r)
        self.apps = Gauge("paas_router_apps", "Apps HAProxy routes", registry=r)
        self.servers = Gauge("paas_router_servers", "Servers HAProxy routes to", registry=r)
        self.last_apply = Gauge(
            "paas_router_last_apply_timestamp_seconds", "Unix time of the last successful apply",
            registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
