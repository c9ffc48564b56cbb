"""Prometheus metrics of one router, in a registry of its own (so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from router.plan import Backend


class SlotCollector(Collector):
    """`paas_router_server_info{app, server, address} 1` for each filled slot: which instance
    address a slot of HAProxy's exporter (`haproxy_server_*{proxy="app_<app>", server="sN"}`)
    counts for now, so per-instance figures can be joined to their instance and release."""

    def __init__(self, layout: Callable[[], Mapping[str, Backend]]) -> None:
        self._layout = layout

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("paas_router_server_info",
                                 "The instance address each HAProxy server slot routes to.",
                                 labels=["app", "server", "address"])
        for app, backend in sorted(self._layout().items()):
            for n, server in enumerate(backend.slots, start=1):
                if server is not None:
                    info.add_metric([app, f"s{n}", f"{server.host}:{server.port}"], 1)
        yield info


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
        self.cert_updates = Counter(
            "paas_router_cert_updates", "Certificate changes applied (added, replaced or "
            "removed) through the runtime API, or by a reload when it refused", registry=r)
        self.certificates = Gauge(
            "paas_router_certificates", "Apps' certificates HAProxy serves over HTTPS",
            registry=r)
        self.unplaced_refused = Counter(
            "paas_router_unplaced_refused", "Passing registrations refused because the "
            "controller did not place them (each instance and address counted once)",
            registry=r)
        self.last_apply = Gauge(
            "paas_router_last_apply_timestamp_seconds", "Unix time of the last successful apply",
            registry=r)

    def watch_slots(self, layout: Callable[[], Mapping[str, Backend]]) -> None:
        """Export the slots of the layout `layout()` returns at each scrape."""
        self.registry.register(SlotCollector(layout))

    def render(self) -> bytes:
        return generate_latest(self.registry)
