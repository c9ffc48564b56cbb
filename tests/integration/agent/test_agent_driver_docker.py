"""The Docker driver against the real engine: publish on the node address only, recover, stop."""

from __future__ import annotations

import secrets

import docker
import pytest

from agent.assignments import Assignment, HealthCheck
from agent.driver import ContainerMissing, DockerDriver, ImageMissing
from paas.listeners import Listener
from agent_it import HTTPD, IMAGE, NODE_ADDR, http_get
from tests.waiting import wait_until, wait_until_async

pytestmark = pytest.mark.docker


def assignment(**kw: object) -> Assignment:
    app = "a" + secrets.token_hex(3)
    base = dict(id=f"{app}-v1-web-{secrets.token_hex(3)}", app=app, release=1, process="web",
                image=IMAGE, command=tuple(HTTPD), env={"GREETING": "hi"}, port=5000,
                memory_mb=64, cpu=0.5, health=HealthCheck(path="/health"), stop_timeout_s=5)
    base.update(kw)
    return Assignment(**base)  # type: ignore[arg-type]


@pytest.fixture
async def driver(run_id: str, docker_client: docker.DockerClient):
    d = DockerDriver(base_url="unix:///var/run/docker.sock", cluster=run_id, node="node-a",
                     address=NODE_ADDR)
    yield d
    d.close()


async def test_start_publishes_on_the_node_address_only(driver: DockerDriver, run_id: str,
                                                        docker_client: docker.DockerClient) -> None:
    a = assignment()
    info = await driver.start(a)
    assert info.running and info.instance_id == a.id and info.host_port
    attrs = docker_client.api.inspect_container(info.container_id)
    assert attrs["Name"] == f"/paas-{run_id}-{a.id}"
    assert attrs["NetworkSettings"]["Ports"]["5000/tcp"] == [
        {"HostIp": NODE_ADDR, "HostPort": str(info.host_port)}]
    host = attrs["HostConfig"]
    assert (host["RestartPolicy"]["Name"], host["LogConfig"]["Type"], host["Memory"],
            host["CpuShares"], host["Init"]) == ("no", "json-file", 64 * 2**20, 512, True)
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert {k: env[k] for k in ("PORT", "PAAS_APP", "PAAS_INSTANCE_ID", "PAAS_ROLE",
                                "GREETING")} == {
        "PORT": "5000", "PAAS_APP": a.app, "PAAS_INSTANCE_ID": a.id, "PAAS_ROLE": "live",
        "GREETING": "hi"}
    assert attrs["Config"]["Labels"]["paas.node"] == "node-a"

    wait_until(lambda: http_get(f"http://{NODE_ADDR}:{info.host_port}/") == (200, "hi\n"), 20,
               0.05, what="httpd answering on the published port", ignore=(OSError,))

    # The start is idempotent: a second call adopts the running container.
    again = await driver.start(a)
    assert again.container_id == info.container_id

    recovered = await driver.recover()
    assert [(c.instance_id, c.container_id, c.state) for c in recovered] == [
        (a.id, info.container_id, "running")]
    assert recovered[0].stop_timeout_s == 5.0

    # SIGTERM must reach httpd through the init process: 143 (128 + SIGTERM), not 137 (the
    # SIGKILL after the stop timeout). How fast: bench/reactions.
    await driver.stop(a.id, timeout_s=5)
    stopped = await driver.inspect(a.id)
    assert (stopped.state, stopped.exit_code) == ("exited", 143)
    await driver.remove(a.id)
    assert await driver.recover() == []
    assert docker_client.containers.list(all=True, filters={"label": f"paas.localcluster={run_id}"}) \
        == []
    with pytest.raises(ContainerMissing):
        await driver.inspect(a.id)
    await driver.stop(a.id, timeout_s=1)  # gone already: no error
    await driver.remove(a.id)


async def test_a_stopped_container_is_started_again_in_place(driver: DockerDriver) -> None:
    a = assignment(command=("/bin/sh", "-c", "echo started; exec sleep 60"), stop_timeout_s=1)
    first = await driver.start(a)
    await driver.stop(a.id, timeout_s=1)
    second = await driver.start(a)
    try:
        assert second.container_id == first.container_id and second.running
        assert "started\nstarted" in await driver.logs(a.id)
    finally:
        await driver.remove(a.id)


async def test_a_missing_image_is_a_typed_error(driver: DockerDriver) -> None:
    with pytest.raises(ImageMissing, match="paas/no-such-image"):
        await driver.start(assignment(image="paas/no-such-image:v1"))
    assert await driver.recover() == []


async def test_recover_sees_only_this_node(driver: DockerDriver, run_id: str) -> None:
    other = DockerDriver(base_url="unix:///var/run/docker.sock", cluster=run_id, node="node-b",
                         address=NODE_ADDR)
    a = assignment(command=("/bin/sh", "-c", "exec sleep 60"), stop_timeout_s=1)
    try:
        await other.start(a)
        assert await driver.recover() == []
        assert [c.instance_id for c in await other.recover()] == [a.id]
    finally:
        await other.remove(a.id)
        other.close()


async def test_listening_reads_the_containers_sockets_from_the_host(driver: DockerDriver) -> None:
    """What the app listens on is read from the kernel: busybox httpd on every address of
    $PORT, then a second listener on 127.0.0.1 only, started inside the container."""
    a = assignment()
    info = await driver.start(a)
    wait_until(lambda: http_get(f"http://{NODE_ADDR}:{info.host_port}/")[0] == 200, 20, 0.05,
               what="httpd answering", ignore=(OSError,))
    found = await driver.listening(a.id)
    assert found is not None and [x.port for x in found] == [5000], found
    assert found[0].everywhere, found

    client = docker.APIClient(base_url=driver.base_url, version="auto")
    run = client.exec_create(info.container_id, ["busybox", "httpd", "-p", "127.0.0.1:7001"])
    client.exec_start(run["Id"])
    client.close()

    async def both() -> list[Listener] | None:
        seen = await driver.listening(a.id)
        return seen if seen and len(seen) == 2 else None

    found = await wait_until_async(both, 20, 0.1, what="the second listener")
    assert {(x.port, x.everywhere) for x in found} == {(5000, True), (7001, False)}, found

    await driver.stop(a.id, timeout_s=1)
    assert await driver.listening(a.id) == []  # stopped: it listens on nothing
    await driver.remove(a.id)
    with pytest.raises(ContainerMissing):
        await driver.listening(a.id)
