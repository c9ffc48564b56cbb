"""Real hosts, simulated: the whole platform across three machines that share nothing but a
private network (tests/simhosts.py): the server (Consul server, controller, registry, router)
and two nodes, each running its own Docker engine, Consul client and agent. examples/hello,
sent by `git push` to the server's controller, is built on the server's engine, proven by its integration test against a control instance on a
node, published through the registry, pulled by each node's engine, and served by the router
from both nodes. Nothing of it touches this machine's own engine."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import sys
import time
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from paas.localcluster import Host, remove_cluster_images
from tests import simhosts
from tests.e2e.conftest import E2E, REPO, Hammer, new_cluster, wait_until
from tests.e2e.test_git_push import git_url, make_repo, push

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


def test_an_app_runs_across_machines_that_share_only_a_network(hosts, tmp_path) -> None:
    e2e, net = hosts
    _, node1, node2 = net.hosts
    e2e.api.post("/v1/apps", {"name": "hello"})
    repo, _ = make_repo(tmp_path)
    pushed = push(repo, git_url(e2e, "hello"), "main")  # to the server's controller
    assert pushed.code == 0, pushed.output
    assert "remote:        | PASS: / and /health answer" in pushed.output  # its test, on a node
    dep = e2e.finish("hello", e2e.api.post("/v1/apps/hello/scale",
                                           {"replicas": {"web": 2}})["deployment"], 120)
    assert dep["status"] == "succeeded", dep
    events = [e["message"] for e in e2e.api.get("/v1/apps/hello/events")["events"]]
    assert any("integration test passed" in m for m in events), events
    pulls = [m for m in events if " pulled the image of " in m]
    assert {m.split()[0] for m in pulls} == {"node-1", "node-2"}, events  # a phase, with seconds

    # One instance on each machine, each from the image its own engine pulled.
    instances = [i for i in e2e.api.get("/v1/apps/hello/instances")["instances"]
                 if i["role"] == "live"]
    assert sorted(i["node"] for i in instances) == ["node-1", "node-2"], instances
    image = f"{simhosts.SUBNET}.1:5000/{e2e.cluster.image_repo}/hello:v1"
    for node in (node1, node2):
        engine = node.engine()
        running = engine.containers(filters={"label": "paas.app=hello"})
        assert len(running) == 1 and running[0]["Image"] == image, running
        # A node has only the app's run image: what it was built on stays on the server.
        assert not [t for i in engine.images() for t in i["RepoTags"] or []
                    if t.startswith(("paas-stack/", BUSYBOX))], engine.images()
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


def live(e2e: E2E, app: str = "hello") -> list[dict]:
    return [i for i in e2e.api.get(f"/v1/apps/{app}/instances")["instances"]
            if i["role"] == "live" and i["state"] == "running"]


def containers(host: simhosts.SimHost, app: str = "hello") -> list[dict]:
    engine = host.engine()
    try:
        return engine.containers(filters={"label": f"paas.app={app}"})
    finally:
        engine.close()


def test_scale_promote_and_roll_back_across_machines(hosts) -> None:
    e2e, net = hosts
    _, node1, node2 = net.hosts
    e2e.api.post("/v1/apps/hello/promote", {})  # v1, deployed by the test above, is stable
    dep = e2e.finish("hello", e2e.api.post("/v1/apps/hello/scale",
                                           {"replicas": {"web": 3}})["deployment"])
    assert dep["status"] == "succeeded", dep
    wait_until(lambda: len(containers(node1)) + len(containers(node2)) == 3
               and len(live(e2e)) == 3, what="3 instances on the two machines")
    assert {len(containers(node1)), len(containers(node2))} == {1, 2}, "spread over both"

    with Hammer(e2e, "hello") as hammer:
        v2 = e2e.api.request("PATCH", "/v1/apps/hello/config",
                             json_body={"set": {"GREETING": "second"}})
        dep = e2e.finish("hello", v2["deployment"], 120)
        assert dep["status"] == "succeeded", dep
        wait_until(lambda: "second" in e2e.get_via_router("hello")[1], what="v2 serving")
        e2e.api.post("/v1/apps/hello/promote", {"release": v2["release"]["version"]})
        dep = e2e.finish("hello", e2e.api.post("/v1/apps/hello/rollback", {})["deployment"], 120)
        assert dep["status"] == "succeeded" and dep["release"] == 1, dep
        wait_until(lambda: "second" not in e2e.get_via_router("hello")[1], what="v1 again")
    assert set(hammer.statuses) == {200}, hammer.statuses
    wait_until(lambda: len(containers(node1)) + len(containers(node2)) == 3, 30, 0.2,
               what="v2's containers removed from both machines")


def test_every_daemon_restarted_in_turn_while_the_app_serves(hosts) -> None:
    e2e, _ = hosts
    cluster = e2e.cluster
    failed: dict[str, int] = {}
    for name in cluster.process_names():
        with Hammer(e2e, "hello") as hammer:
            cluster.stop_process(name)
            cluster.up()  # starts what is not running and waits until every part answers
            wait_until(lambda: e2e.served("hello") == 3, 30, 0.1, what=f"3 routed after {name}")
        failed[name] = sum(n for status, n in hammer.statuses.items() if status != 200)
        assert e2e.get_via_router("hello")[0] == 200, f"served after restarting {name}"
    print("failed requests while each daemon restarted:", failed)
    # Not one, the router's included: its HAProxy serves on and the next router adopts it.
    assert {name: n for name, n in failed.items() if n} == {}, failed
    assert len(live(e2e)) == 3


def test_a_machine_cut_off_is_replaced_and_returns_without_a_second_copy(hosts) -> None:
    e2e, net = hosts
    _, node1, node2 = net.hosts
    wait_until(lambda: len(live(e2e)) == 3, what="3 live instances")
    lost = {i["id"] for i in live(e2e) if i["node"] == "node-2"}
    assert lost
    with Hammer(e2e, "hello") as hammer:
        t0 = time.monotonic()
        node2.cable(plugged=False)
        for name in ("agent-node-2", "consul-node-2"):
            e2e.cluster.stop_process(name, sig=signal.SIGKILL)
        wait_until(lambda: len(live(e2e)) == 3 and {i["node"] for i in live(e2e)} == {"node-1"}
                   and len(containers(node1)) == 3, 60, 0.2,
                   what="3 instances running on node-1")
        replaced = time.monotonic() - t0
        wait_until(lambda: e2e.served("hello") == 3, 30, 0.1, what="3 routed on node-1")
        served_again = time.monotonic() - t0
    failed = sum(n for status, n in hammer.statuses.items() if status != 200)
    print(f"node-2 cut off: replaced on node-1 in {replaced:.1f}s, served at 3 in "
          f"{served_again:.1f}s; {failed} of {sum(hammer.statuses.values())} requests failed")
    nodes = {n["name"]: n["status"] for n in e2e.api.get("/v1/nodes")["nodes"]}
    assert nodes["node-2"] == "down", nodes

    node2.cable(plugged=True)
    e2e.cluster.up()  # its Consul client and agent again
    wait_until(lambda: containers(node2) == [], 60, 0.2,
               what="the returning node's stale containers removed")
    wait_until(lambda: {n["name"]: n["status"] for n in e2e.api.get("/v1/nodes")["nodes"]}
               ["node-2"] == "ready", 30, 0.2, what="node-2 ready again")
    assert len(containers(node1)) == 3 and lost.isdisjoint(i["id"] for i in live(e2e))
    assert e2e.get_via_router("hello")[0] == 200


def test_a_node_that_cannot_pull_fails_the_placement_with_the_registrys_reason(hosts) -> None:
    e2e, net = hosts
    _, node1, node2 = net.hosts
    wait_until(lambda: len(live(e2e)) == 3 and len(containers(node1)) == 3, 30, 0.2,
               what="3 instances on node-1")
    engine = node2.engine()  # node-2 has no container left, and now no image of the app
    for image in engine.images(filters={"reference": f"*/{e2e.cluster.image_repo}/hello"}):
        engine.remove_image(image["Id"], force=True)
    engine.close()
    e2e.cluster.stop_process("registry")
    try:
        t0 = time.monotonic()
        dep = e2e.finish("hello", e2e.api.post("/v1/apps/hello/scale",
                                               {"replicas": {"web": 4}})["deployment"], 60)
        took = time.monotonic() - t0
    finally:
        e2e.cluster.up()
    assert dep["status"] == "failed", dep
    assert dep["reason"].startswith("node-2 cannot start instance hello-v1-web-"), dep["reason"]
    assert "could not be pulled" in dep["reason"] and "connection refused" in dep["reason"], \
        dep["reason"]
    assert took < 30, f"the deploy took {took:.0f}s to say it cannot pull"
    assert len(live(e2e)) == 3 and e2e.get_via_router("hello")[0] == 200


def test_host_remove_drains_the_node_and_takes_it_out(hosts, tmp_path) -> None:
    e2e, net = hosts
    _, node1, node2 = net.hosts
    dep = e2e.finish("hello", e2e.api.post("/v1/apps/hello/scale",
                                           {"replicas": {"web": 4}})["deployment"], 60)
    assert dep["status"] == "succeeded", dep
    wait_until(lambda: len(containers(node2)) == 1 and len(live(e2e)) == 4, 30, 0.2,
               what="an instance on node-2 again")
    # node-2 as `paas host install` leaves a machine (staged under a folder: no systemd here).
    stage = tmp_path / "node-2"
    cli = [sys.executable, "-m", "paas.cli", "host"]
    subprocess.run([*cli, "install", "--role", "node", "--server", net.hosts[0].address,
                    "--join-token", e2e.cluster.join_token(), "--name", "node-2",
                    "--address", node2.address, "--consul", "/bin/true", "--root", str(stage)],
                   check=True, capture_output=True, cwd=REPO)
    units = stage / "etc/systemd/system"
    with Hammer(e2e, "hello") as hammer:
        remove = subprocess.Popen([*cli, "remove", "--root", str(stage), "--json"], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Its units go once the node is drained; here, we stop what they would have run.
        wait_until(lambda: not list(units.glob("*.service")), 120, 0.2,
                   what="the drained node's units removed")
        assert containers(node2) == [] and len(containers(node1)) == 4
        for name in ("agent-node-2", "consul-node-2"):
            e2e.cluster.stop_process(name)
        out, err = remove.communicate(timeout=60)
    assert remove.returncode == 0, err
    assert json.loads(out)["removed"] == "node-2"
    assert "draining" in err and "removed paas-agent-node-2.service" in err
    assert [n["name"] for n in e2e.api.get("/v1/nodes")["nodes"]] == ["node-1"]
    assert not (stage / "var/lib/paas/join.token").exists()
    assert set(hammer.statuses) == {200}, hammer.statuses
    assert len(live(e2e)) == 4 and {i["node"] for i in live(e2e)} == {"node-1"}
