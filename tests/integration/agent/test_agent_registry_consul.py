"""The Consul registry against a real Consul dev agent and a real container."""

from __future__ import annotations

import secrets
import socket

import docker
import pytest

from agent.assignments import Assignment, HealthCheck
from agent.driver import DockerDriver
from agent.registry import ConsulRegistry
from agent_it import HTTPD, IMAGE, NODE_ADDR, check_status, consul_json
from paas.consul import ConsulClient, ConsulUnavailable
from tests.waiting import wait_until_async

pytestmark = pytest.mark.docker


@pytest.fixture
async def running(run_id: str, docker_client: docker.DockerClient):
    """A web instance running on the node address, removed afterwards."""
    app = "r" + secrets.token_hex(3)
    a = Assignment(id=f"{app}-v2-web-{secrets.token_hex(3)}", app=app, release=2, process="web",
                   image=IMAGE, command=tuple(HTTPD), role="control",
                   health=HealthCheck(path="/health", interval_s=0.5, timeout_s=1),
                   stop_timeout_s=1)
    driver = DockerDriver(base_url="unix:///var/run/docker.sock", cluster=run_id,
                          node="node-r", address=NODE_ADDR)
    info = await driver.start(a)
    yield a, info
    await driver.remove(a.id)
    driver.close()


async def test_register_passes_lists_and_deregisters(consul_url: str, run_id: str,
                                                     running) -> None:
    a, info = running
    registry = ConsulRegistry(consul=ConsulClient(consul_url), cluster=run_id, node="node-r",
                              address=NODE_ADDR)
    other = ConsulRegistry(consul=ConsulClient(consul_url), cluster=run_id, node="node-other",
                           address=NODE_ADDR)
    try:
        await registry.register(a, host_port=info.host_port)
        await wait_until_async(lambda: check_status(consul_url, a.id) == "passing", 20,
                               what="the HTTP check to pass")

        [entry] = consul_json(consul_url, f"/v1/health/service/{a.app}?passing=1")
        svc = entry["Service"]
        assert (svc["ID"], svc["Address"], svc["Port"], svc["Tags"]) == (
            a.id, NODE_ADDR, info.host_port, ["control", "v2", "web"])
        assert svc["Meta"]["paas_cluster"] == run_id and svc["Meta"]["paas_role"] == "control"

        listed = await registry.registered()
        assert list(listed) == [a.id] and listed[a.id].port == info.host_port
        assert await other.registered() == {}

        await registry.deregister(a.id)
        assert check_status(consul_url, a.id) is None
        assert consul_json(consul_url, f"/v1/health/service/{a.app}") == []
        assert await registry.registered() == {}
        await registry.deregister(a.id)  # not registered: no error
    finally:
        await registry.close()
        await other.close()


async def test_unreachable_consul_is_a_typed_error(run_id: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.6.1", 0))
        port = s.getsockname()[1]
    registry = ConsulRegistry(consul=ConsulClient(f"http://127.0.6.1:{port}"), cluster=run_id,
                              node="node-r", address=NODE_ADDR)
    try:
        with pytest.raises(ConsulUnavailable):
            await registry.registered()
    finally:
        await registry.close()
