"""The Consul service definition the agent registers (agent/registry.py), against the contract."""

from __future__ import annotations

import pytest

from agent.assignments import Assignment, HealthCheck
from agent.registry import duration, service_definition


def test_service_definition_follows_the_contract() -> None:
    a = Assignment(id="hello-v3-web-1a2b3c", app="hello", release=3, process="web",
                   image="paas/hello:v3", role="control",
                   health=HealthCheck(path="/health", interval_s=2, timeout_s=0.5))
    body = service_definition(a, cluster="c1", node="n1", address="127.0.0.2", host_port=32768)
    assert body == {
        "ID": "hello-v3-web-1a2b3c", "Name": "hello", "Address": "127.0.0.2", "Port": 32768,
        "Tags": ["control", "v3", "web"],
        "Meta": {"paas_cluster": "c1", "paas_node": "n1", "paas_app": "hello",
                 "paas_release": "3", "paas_process": "web",
                 "paas_instance": "hello-v3-web-1a2b3c", "paas_role": "control"},
        "Check": {"CheckID": "service:hello-v3-web-1a2b3c",
                  "Name": "hello hello-v3-web-1a2b3c HTTP /health",
                  "HTTP": "http://127.0.0.2:32768/health", "Method": "GET",
                  "Interval": "2s", "Timeout": "500ms",
                  "DeregisterCriticalServiceAfter": "10m", "Status": "critical"}}


def test_without_a_health_path_the_check_is_tcp_on_the_instance_port() -> None:
    a = Assignment(id="flask-v1-web-1a2b3c", app="flask", release=1, process="web",
                   image="paas/flask:v1", health=HealthCheck())
    check = service_definition(a, cluster="c1", node="n1", address="127.0.0.2",
                               host_port=32769)["Check"]
    assert check["TCP"] == "127.0.0.2:32769" and check["Name"] == "flask flask-v1-web-1a2b3c TCP"
    assert "HTTP" not in check and "Method" not in check
    assert check["Status"] == "critical"


def test_an_instance_with_a_metrics_path_tells_prometheus_where_to_scrape() -> None:
    a = Assignment(id="go-v2-web-1a2b3c", app="go", release=2, process="web",
                   image="paas/go:v2", metrics_path="/metrics")
    meta = service_definition(a, cluster="c1", node="n1", address="127.0.0.2",
                              host_port=32770)["Meta"]
    assert meta["metrics_path"] == "/metrics" and meta["paas_release"] == "2"


@pytest.mark.parametrize("seconds, text", [(1, "1s"), (1.0, "1s"), (0.5, "500ms"),
                                           (1.5, "1500ms"), (30, "30s"), (0.0001, "1ms")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text
