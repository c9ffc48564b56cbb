"""Parsing the controller's long-poll answer and the naming helpers (agent/assignments.py)."""

from __future__ import annotations

import copy

import pytest

from agent.assignments import (
    Assignment,
    HealthCheck,
    InvalidAssignment,
    container_env,
    container_labels,
    container_name,
    parse_assignments,
    service_tags,
)

# The example of docs/architecture.md, verbatim.
CONTRACT_EXAMPLE = {"index": 7, "instances": [{
    "id": "hello-v1-web-1a2b3c", "app": "hello", "release": 1, "process": "web",
    "role": "live", "desired": "running",
    "image": "paas/hello:v1", "command": None, "env": {"GREETING": "hi"},
    "port": 5000, "memory_mb": 128, "cpu": 0.25,
    "health": {"path": "/health", "interval_s": 1, "timeout_s": 1},
    "stop_timeout_s": 10}]}


def test_parses_the_contract_example() -> None:
    got = parse_assignments(CONTRACT_EXAMPLE)
    assert got.index == 7
    assert got.instances == (Assignment(
        id="hello-v1-web-1a2b3c", app="hello", release=1, process="web", image="paas/hello:v1",
        role="live", desired="running", command=None, env={"GREETING": "hi"}, port=5000,
        memory_mb=128, cpu=0.25, health=HealthCheck("/health", 1.0, 1.0), stop_timeout_s=10.0),)


def test_defaults_for_optional_fields() -> None:
    a = parse_assignments({"index": 1, "instances": [{
        "id": "w-v2-worker-abcdef", "app": "w", "release": 2, "process": "worker",
        "image": "paas/w:v2", "health": None, "port": None, "command": ["run", "it"]}]}
    ).instances[0]
    assert (a.role, a.desired, a.port, a.health, a.stop_timeout_s, a.command) == (
        "live", "running", 5000, HealthCheck(), 10.0, ("run", "it"))


def test_a_metrics_path_is_passed_on() -> None:
    assert parse_assignments(_with(metrics_path="/metrics")).instances[0].metrics_path == \
        "/metrics"
    assert parse_assignments(CONTRACT_EXAMPLE).instances[0].metrics_path is None


def _with(**changes: object) -> dict:
    body = copy.deepcopy(CONTRACT_EXAMPLE)
    body["instances"][0].update(changes)
    return body


@pytest.mark.parametrize("body", [
    [],
    {"index": -1, "instances": []},
    {"index": 1},
    _with(id="../etc"),
    _with(app="Hello"),
    _with(release=0),
    _with(image=""),
    _with(role="canary"),
    _with(desired="stopped"),
    _with(command="sh -c 'rm -rf /'"),
    _with(env={"A": 1}),
    _with(port=70000),
    _with(health={"path": "health"}),
    _with(stop_timeout_s=-1),
    _with(metrics_path="metrics"),
    _with(metrics_path=5),
    {"index": 1, "instances": [CONTRACT_EXAMPLE["instances"][0]] * 2},
], ids=lambda b: str(b)[:60])
def test_rejects_malformed_answers(body: object) -> None:
    with pytest.raises(InvalidAssignment):
        parse_assignments(body)


def test_names_labels_env_and_tags() -> None:
    a = parse_assignments(CONTRACT_EXAMPLE).instances[0]
    assert container_name("c1", a.id) == "paas-c1-hello-v1-web-1a2b3c"
    assert container_labels(a, cluster="c1", node="n1") == {
        "paas.localcluster": "c1", "paas.node": "n1", "paas.app": "hello", "paas.release": "1",
        "paas.process": "web", "paas.instance": "hello-v1-web-1a2b3c", "paas.role": "live"}
    env = container_env(Assignment(**{**a.__dict__, "env": {"PORT": "1", "GREETING": "hi"}}))
    assert env == {"GREETING": "hi", "PORT": "5000", "PAAS_APP": "hello", "PAAS_RELEASE": "1",
                   "PAAS_PROCESS": "web", "PAAS_INSTANCE_ID": "hello-v1-web-1a2b3c",
                   "PAAS_ROLE": "live"}
    assert service_tags(a) == ("live", "v1", "web")
    stable = Assignment(**{**a.__dict__, "tags": ("stable", "web")})
    assert service_tags(stable) == ("live", "v1", "web", "stable")
