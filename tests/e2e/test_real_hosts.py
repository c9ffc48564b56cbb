"""Real hosts, simulated: the whole platform across three machines that share nothing but a
private network (tests/simhosts.py): the server (Consul server, controller, registry, router)
and two nodes, each running its own Docker engine, Consul client and agent. examples/hello is
built on the server's engine, proven by its integration test against a control instance on a
node, published through the registry, pulled by each node's engine, and served by the router
from both nodes. Nothing of it touches this machine's own engine."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from paas.localcluster import Host, remove_cluster_images
from tests import simhosts
from tests.e2e.conftest import E2E, REPO, new_cluster, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
BUSYBOX = "paas/busybox:latest"


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[E2E, simhosts.SimNetwork]]:
    simhosts.clear_leftovers()
    root = Path(tempfile.mkdtemp(prefix="paas-realhosts-"))
    with simhosts.SimNetwork(root=root / "machines", count=3) as net:
        server = net.hosts[0].engine()
        server.load_image(subprocess.run(["docker", "save", BUSYBOX], capture_output=True,
                                         check=True).stdout)  # the stack a Dockerfile builds on
        server.close()
        cluster = new_cluster(root / "cluster", prefix=simhosts.SUBNET, nodes=2,
                              cluster_id="rh" + secrets.token_hex(3), registry=True,
                              hosts={i: Host(enter=tuple(h.argv([])), docker_url=h.docker_url)
                                     for i, h in enumerate(net.hosts)})
        try:
            cluster.up()
            e2e = E2E(cluster)
            wait_until(lambda: len([n for n in e2e.api.get("/v1/nodes")["nodes"]
                                    if n["status"] == "ready"]) == 2, what="2 ready nodes")
            yield e2e, net
        finally:
            cluster.down(remove_containers=False)  # the machines' engines go with them
            remove_cluster_images(cluster.image_repo)
    shutil.rmtree(root, ignore_errors=True)


def test_an_app_runs_across_machines_that_share_only_a_network(hosts) -> None:
    e2e, net = hosts
    _, node1, node2 = net.hosts
    e2e.api.post("/v1/apps", {"name": "hello"})
    release = e2e.build("hello", REPO / "examples" / "hello")
    dep = e2e.deploy("hello", release["version"], 2, timeout=120)
    assert dep["status"] == "succeeded", dep
    events = [e["message"] for e in e2e.api.get(
        f"/v1/apps/hello/events?deployment={dep['id']}")["events"]]
    assert any("integration test passed" in m for m in events), events

    # One instance on each machine, each from the image its own engine pulled.
    instances = [i for i in e2e.api.get("/v1/apps/hello/instances")["instances"]
                 if i["role"] == "live"]
    assert sorted(i["node"] for i in instances) == ["node-1", "node-2"], instances
    image = f"{simhosts.SUBNET}.1:5000/{e2e.cluster.image_repo}/hello:v1"
    for node in (node1, node2):
        engine = node.engine()
        running = engine.containers(filters={"label": "paas.app=hello"})
        assert len(running) == 1 and running[0]["Image"] == image, running
        engine.close()
    here = docker.APIClient(version="auto")
    assert not here.containers(all=True, filters={"label": f"paas.localcluster="
                                                            f"{e2e.cluster.cluster_id}"})
    here.close()

    # The router on the server serves both machines' instances.
    seen = set()

    def both_served() -> bool:
        status, body = e2e.get_via_router("hello")
        if status == 200:
            seen.add(body.split(" instance ")[1].strip())
        return len(seen) == 2

    wait_until(both_served, 30, 0.05, what="both machines' instances served")
