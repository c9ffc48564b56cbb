"""paas.controller.targets: Prometheus' targets (http_sd) from Consul's catalog entries."""

from __future__ import annotations

from paas.consul import HealthEntry, Service
from paas.controller.targets import services_of, target_groups


def entry(sid: str, name: str, port: int, **meta: str) -> HealthEntry:
    return HealthEntry(service=Service(id=sid, name=name, address="127.0.0.2", port=port,
                                       meta=meta), status="passing")


INSTANCE_META = {"paas_app": "go", "paas_release": "3", "paas_process": "web",
                 "paas_instance": "go-v3-web-abcdef", "paas_node": "node-1",
                 "paas_role": "control", "paas_cluster": "c1"}
CATALOG = ["consul", "go", "hello", "paas-agent", "paas-controller", "paas-haproxy",
           "paas-router"]


def test_each_kind_reads_its_own_services() -> None:
    assert services_of("apps", CATALOG) == ["go", "hello"]
    assert services_of("paas", CATALOG) == ["paas-agent", "paas-controller", "paas-router"]
    assert services_of("haproxy", CATALOG) == ["paas-haproxy"]


def test_an_instance_with_a_metrics_path_is_a_target_with_the_platforms_labels() -> None:
    groups = target_groups("apps", {
        "go": [entry("go-v3-web-abcdef", "go", 32768, metrics_path="/metrics", **INSTANCE_META)],
        "hello": [entry("hello-v1-web-aaaaaa", "hello", 32769, paas_app="hello")],  # no path
    })
    assert [g.as_json() for g in groups] == [{
        "targets": ["127.0.0.2:32768"],
        "labels": {"__metrics_path__": "/metrics", "app": "go", "release": "3",
                   "process": "web", "instance": "go-v3-web-abcdef", "node": "node-1",
                   "role": "control"}}]  # a control instance is scraped, and says so


def test_daemons_are_labelled_with_their_component_and_node() -> None:
    groups = target_groups("paas", {"paas-agent": [entry(
        "paas-agent-node-2", "paas-agent", 7071, metrics_path="/metrics",
        paas_component="agent", paas_daemon_node="node-2")]})
    assert [g.as_json() for g in groups] == [{
        "targets": ["127.0.0.2:7071"],
        "labels": {"__metrics_path__": "/metrics", "component": "agent", "node": "node-2"}}]


def test_an_entry_without_a_path_or_an_address_is_no_target() -> None:
    assert target_groups("haproxy", {"paas-haproxy": [
        entry("x", "paas-haproxy", 0, metrics_path="/metrics"),
        entry("y", "paas-haproxy", 7073, metrics_path="metrics")]}) == []


def test_the_latency_histograms_are_the_exporters_other_path() -> None:
    exporter = {"paas-haproxy": [entry("paas-haproxy-server", "paas-haproxy", 7073,
                                       metrics_path="/metrics", paas_component="haproxy")]}
    assert services_of("latency", CATALOG) == ["paas-haproxy"]
    [group] = target_groups("latency", exporter)
    assert group.as_json() == {"targets": ["127.0.0.2:7073"],
                               "labels": {"__metrics_path__": "/latency"}}
