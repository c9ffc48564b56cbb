"""Fixtures for the agent's integration tests: real Docker, a real Consul dev agent, run labels.

Addresses: Consul listens on 127.0.6.1, the node under test is 127.0.6.2 (containers publish
there). Everything made here carries the per-run cluster id (`paas.localcluster` label, `paas_cluster`
service meta) and is removed at the end: exactly those containers, and the Consul process by PID.
"""

from __future__ import annotations

import secrets
import subprocess
from typing import Iterator

import docker
import docker.errors
import pytest

from agent_it import CONSUL_ADDR, IMAGE, REPO, http_get
from tests.waiting import wait_until
from tests.engines import SETUP, consul_binary


@pytest.fixture(scope="session")
def run_id() -> str:
    """The per-run cluster id: labels every container and service these tests make."""
    return "agt" + secrets.token_hex(3)


@pytest.fixture(scope="session")
def docker_client(run_id: str) -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"Docker engine unavailable: {exc}; {SETUP}")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run([str(REPO / "stacks/busybox/build.sh")], check=True)
    yield client
    for c in client.containers.list(all=True, filters={"label": f"paas.localcluster={run_id}"}):
        c.remove(force=True)
    client.close()


@pytest.fixture(scope="session")
def consul_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Consul dev agent on 127.0.6.1, started for this run and stopped by its PID."""
    url = f"http://{CONSUL_ADDR}:8500"
    try:
        http_get(url + "/v1/status/leader", timeout=0.5)
    except OSError:
        pass
    else:
        pytest.fail(f"something already listens on {url}; stop it (it is not this run's)")
    log = (tmp_path_factory.mktemp("consul") / "consul.log").open("wb")
    proc = subprocess.Popen(
        [consul_binary(), "agent", "-dev", "-bind", CONSUL_ADDR, "-client", CONSUL_ADDR,
         "-node", "agent-it", "-dns-port", "-1", "-log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        def leader() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"consul exited with {proc.returncode}; see {log.name}")
            try:
                return http_get(url + "/v1/status/leader", timeout=0.5)[1].strip() not in ("", '""')
            except OSError:
                return False
        wait_until(leader, 20, what="consul to elect itself leader")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
