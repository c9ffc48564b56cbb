"""The whole agent process against real Docker and Consul, driven by a tiny controller double.

`FakeController` implements only the three agent endpoints of docs/architecture.md (register,
heartbeat, long-poll assignments) with bearer-token checks: a test double of the protocol, not
of the controller.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import docker
import pytest
from aiohttp import web

from agent_it import (
    CONSUL_ADDR,
    HTTPD,
    IMAGE,
    NODE_ADDR,
    REPO,
    check_status,
    free_port,
    http_get,
)
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "join-" + secrets.token_hex(8)
BOOT_THEN_HTTPD = [HTTPD[0], HTTPD[1], "echo booting $PAAS_INSTANCE_ID; " + HTTPD[2]]


class FakeController:
    def __init__(self) -> None:
        self.index = 1
        self.instances: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.heartbeats: list[dict[str, Any]] = []
        self.polls = 0

    def assign(self, instances: list[dict[str, Any]]) -> None:
        self.index += 1
        self.instances = instances
        self.changed.set()
        self.changed = asyncio.Event()

    def last_report(self, instance_id: str) -> dict[str, Any] | None:
        for beat in reversed(self.heartbeats):
            for report in beat["instances"]:
                if report["id"] == instance_id:
                    return report
            return None
        return None

    def app(self) -> web.Application:
        @web.middleware
        async def auth(request: web.Request, handler):
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return web.json_response({"error": "bad token"}, status=401)
            node = request.match_info.get("node")
            if request.method != "PUT" and node not in self.nodes:
                return web.json_response({"error": "unknown node"}, status=404)
            return await handler(request)

        async def register(request: web.Request) -> web.Response:
            self.nodes[request.match_info["node"]] = await request.json()
            return web.json_response({"node": {"name": request.match_info["node"]}})

        async def heartbeat(request: web.Request) -> web.Response:
            self.heartbeats.append(await request.json())
            return web.json_response({"ok": True})

        async def assignments(request: web.Request) -> web.Response:
            self.polls += 1
            known = int(request.query["index"])
            if self.index <= known:
                try:
                    await asyncio.wait_for(self.changed.wait(), float(request.query["wait"]))
                except asyncio.TimeoutError:
                    pass
            return web.json_response({"index": self.index, "instances": self.instances})

        app = web.Application(middlewares=[auth])
        app.router.add_put("/v1/nodes/{node}", register)
        app.router.add_post("/v1/nodes/{node}/heartbeat", heartbeat)
        app.router.add_get("/v1/nodes/{node}/assignments", assignments)
        return app


@pytest.fixture
async def controller() -> AsyncIterator[tuple[FakeController, str]]:
    fake = FakeController()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    port = free_port(CONSUL_ADDR)
    await web.TCPSite(runner, CONSUL_ADDR, port).start()
    yield fake, f"http://{CONSUL_ADDR}:{port}"
    fake.changed.set()  # release long-polls still held for a stopped agent
    await runner.cleanup()


class AgentProcess:
    """Starts `python -m agent.main` and stops it by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, admin_port: int) -> None:
        self.argv = argv
        self.log = log
        self.admin_url = f"http://{NODE_ADDR}:{admin_port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.main", *self.argv, cwd=str(REPO),
                stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def stop(self, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode  # type: ignore[return-value]


@pytest.fixture
async def agent(controller, consul_url: str, run_id: str, tmp_path: Path,
                docker_client: docker.DockerClient):
    _, controller_url = controller
    token_file = tmp_path / "join-token"
    token_file.write_text(TOKEN + "\n")
    admin_port = free_port(NODE_ADDR)
    proc = AgentProcess([
        "--node", "node-" + secrets.token_hex(2), "--address", NODE_ADDR,
        "--controller-url", controller_url, "--join-token-file", str(token_file),
        "--consul-url", consul_url, "--cluster", run_id, "--cpu", "2", "--memory-mb", "512",
        "--label", "zone=a", "--admin-port", str(admin_port), "--wait", "30",
        "--heartbeat-interval", "0.3", "--reconcile-interval", "1", "--log-level", "DEBUG",
    ], tmp_path / "agent.log", admin_port)
    yield proc
    code = await proc.stop()
    if code not in (0, -signal.SIGTERM):
        print(proc.log.read_text())


def web_instance(*, desired: str = "running", stop_timeout_s: float = 2) -> dict[str, Any]:
    app = "d" + secrets.token_hex(3)
    return {"id": f"{app}-v1-web-{secrets.token_hex(3)}", "app": app, "release": 1,
            "process": "web", "role": "live", "desired": desired, "image": IMAGE,
            "command": BOOT_THEN_HTTPD, "env": {"GREETING": "hi"}, "port": 5000, "memory_mb": 64,
            "cpu": 0.25, "health": {"path": "/health", "interval_s": 0.5, "timeout_s": 1},
            "stop_timeout_s": stop_timeout_s}


def containers(client: docker.DockerClient, run_id: str, instance_id: str):
    return client.containers.list(all=True, filters={
        "label": [f"paas.localcluster={run_id}", f"paas.instance={instance_id}"]})


async def test_runs_adopts_drains_and_removes(controller, agent: AgentProcess, consul_url: str,
                                             run_id: str,
                                             docker_client: docker.DockerClient) -> None:
    fake, _ = controller
    inst = web_instance()
    iid = inst["id"]
    fake.assign([inst])
    await agent.start()

    report = await wait_until_async(
        lambda: (r := fake.last_report(iid)) and r["state"] == "running" and r, 30,
        what="a heartbeat reporting the instance running")
    [node] = fake.nodes.values()
    assert node == {"address": NODE_ADDR, "cpu": 2.0, "memory_mb": 512, "labels": {"zone": "a"},
                    "consul_url": consul_url, "agent_url": agent.admin_url}
    [container] = containers(docker_client, run_id, iid)
    assert report["container_id"] == container.id and report["restarts"] == 0
    assert http_get(f"http://{NODE_ADDR}:{report['host_port']}/") == (200, "hi\n")
    await wait_until_async(lambda: check_status(consul_url, iid) == "passing", 20,
                           what="the instance's Consul check to pass")
    status, health = http_get(f"{agent.admin_url}/healthz")
    assert status == 200 and '"ok": true' in health
    status, metrics = http_get(f"{agent.admin_url}/metrics")
    assert status == 200 and 'paas_agent_instances{state="running"} 1.0' in metrics
    logs_url = f"{agent.admin_url}/v1/instances/{iid}/logs?tail=5"
    assert http_get(logs_url)[0] == 401
    assert http_get(logs_url, headers={"Authorization": f"Bearer {TOKEN}"}) == (
        200, f"booting {iid}\n")

    # A restarted agent adopts the running container: same id, never restarted.
    started_at = container.attrs["State"]["StartedAt"]
    assert await agent.stop() == 0
    container.reload()
    assert container.status == "running"
    beats = len(fake.heartbeats)
    await agent.start()
    await wait_until_async(lambda: len(fake.heartbeats) > beats + 2, 30,
                           what="heartbeats after restart")
    assert fake.last_report(iid)["container_id"] == container.id  # type: ignore[index]
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started_at
    assert check_status(consul_url, iid) == "passing"

    # Draining: deregistered from Consul, the container keeps running. The long-poll (wait 30 s)
    # must wake the agent at once: the waits below stay well under those 30 s.
    fake.assign([{**inst, "desired": "draining"}])
    await wait_until_async(lambda: check_status(consul_url, iid) is None, 20,
                           what="the draining instance to leave Consul")
    container.reload()
    assert container.status == "running"

    # Unassigned: stopped (SIGTERM) and removed.
    fake.assign([])
    await wait_until_async(lambda: not containers(docker_client, run_id, iid), 20,
                           what="the unassigned container to be removed")
    assert check_status(consul_url, iid) is None
    await wait_until_async(lambda: fake.heartbeats[-1]["instances"] == [], 20,
                           what="an empty heartbeat")


async def test_a_crashed_container_is_restarted_and_reported(
        controller, agent: AgentProcess, consul_url: str, run_id: str,
        docker_client: docker.DockerClient) -> None:
    fake, _ = controller
    inst = web_instance()
    iid = inst["id"]
    fake.assign([inst])
    await agent.start()
    first = await wait_until_async(
        lambda: (r := fake.last_report(iid)) and r["state"] == "running" and r, 30,
        what="the instance running")
    await wait_until_async(lambda: check_status(consul_url, iid) == "passing", 20,
                           what="passing check")

    [container] = containers(docker_client, run_id, iid)
    container.kill()
    again = await wait_until_async(
        lambda: (r := fake.last_report(iid)) and r["state"] == "running" and r["restarts"] == 1
        and r, 30, what="the instance restarted")
    assert again["container_id"] == first["container_id"]
    assert http_get(f"http://{NODE_ADDR}:{again['host_port']}/") == (200, "hi\n")
    # Re-registered on its new host port, and passing again.
    await wait_until_async(lambda: check_status(consul_url, iid) == "passing", 20,
                           what="the restarted instance passing in Consul")
    services = http_get(f"{consul_url}/v1/agent/service/{iid}")[1]
    assert f'"Port": {again["host_port"]}' in services or \
        f'"Port":{again["host_port"]}' in services

    # The controller forgets the node (404 on its heartbeats): the agent registers again.
    fake.nodes.clear()
    await wait_until_async(lambda: fake.nodes, 20, what="the node to register again")

    fake.assign([])
    await wait_until_async(lambda: not containers(docker_client, run_id, iid), 20,
                           what="the container to be removed")
