"""Issue 5, end to end on a 3-node local cluster (127.0.4.2-4, each node with its own Consul
client agent): spread and constraints, node loss and return, repeated agent kills, controller
kills during deploys, and draining a node without a failed request."""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import time
import urllib.error
from typing import Any, Iterator

import pytest

from paas.localcluster import remove_cluster_images
from tests.e2e.conftest import E2E, REPO, Hammer, app_dir, new_cluster, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def c3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    cluster = new_cluster(tmp_path_factory.mktemp("cluster3"), prefix="127.0.4", nodes=3,
                          cluster_id="e3" + secrets.token_hex(3),
                          node_labels={1: {"zone": "a"}, 2: {"zone": "b"}, 3: {"zone": "b"}},
                          registry=True)
    try:
        cluster.up()
        e = E2E(cluster)
        wait_until(lambda: len([n for n in e.api.get("/v1/nodes")["nodes"]
                                if n["status"] == "ready"]) == 3, what="3 ready nodes")
        yield e
    finally:
        cluster.down()
        remove_cluster_images(cluster.image_repo)


def instances(e: E2E, app: str) -> list[dict[str, Any]]:
    return e.api.get(f"/v1/apps/{app}/instances")["instances"]


def deploy_new(e: E2E, app: str, replicas: Any, directory=None) -> dict[str, Any]:
    release = e.build(app, directory or REPO / "examples" / "hello")
    return e.deploy(app, release["version"], replicas)


def test_spread_and_constraints_show_in_placements(c3, tmp_path):
    c3.api.post("/v1/apps", {"name": "spread"})
    assert deploy_new(c3, "spread", 3)["status"] == "succeeded"
    assert sorted(i["node"] for i in instances(c3, "spread")) == ["node-1", "node-2", "node-3"]

    c3.api.post("/v1/apps", {"name": "pinned"})
    pinned = app_dir(tmp_path, toml='[process.web]\nconstraints = { zone = "b" }\n')
    assert deploy_new(c3, "pinned", 4, pinned)["status"] == "succeeded"
    nodes = [i["node"] for i in instances(c3, "pinned")]
    assert sorted(nodes) == ["node-2", "node-2", "node-3", "node-3"]

    c3.api.post("/v1/apps", {"name": "nowhere"})
    nowhere = app_dir(tmp_path, toml='[process.web]\nconstraints = { zone = "c" }\n')
    dep = deploy_new(c3, "nowhere", 1, nowhere)
    assert dep["status"] == "failed" and "constraint unmet on 3 nodes" in dep["reason"], dep
    for app in ("spread", "pinned", "nowhere"):
        c3.api.delete(f"/v1/apps/{app}")


def test_node_loss_reschedules_and_the_returning_node_leaves_no_duplicates(c3):
    c3.api.post("/v1/apps", {"name": "survive"})
    assert deploy_new(c3, "survive", 3)["status"] == "succeeded"
    wait_until(lambda: c3.served("survive") == 3, what="3 routed")
    lost = [i["id"] for i in instances(c3, "survive") if i["node"] == "node-3"]
    assert len(lost) == 1
    # The agent dies (kill -9) but its container keeps running, as after a partition.
    c3.cluster.stop_process("agent-node-3", sig=signal.SIGKILL)
    t0 = time.monotonic()
    wait_until(lambda: {i["node"] for i in instances(c3, "survive")
                        if i["state"] == "running"} <= {"node-1", "node-2"}
               and len([i for i in instances(c3, "survive") if i["state"] == "running"]) == 3,
               timeout=40, what="3 running instances on the nodes left")
    print(f"rescheduled in {time.monotonic() - t0:.1f}s")
    nodes = {n["name"]: n["status"] for n in c3.api.get("/v1/nodes")["nodes"]}
    assert nodes["node-3"] == "down"
    assert c3.get_via_router("survive")[0] == 200

    c3.cluster.start_process("agent-node-3")
    wait_until(lambda: c3.containers(app="survive", node="node-3") == [], timeout=30,
               what="the stale container removed from the returning node")
    wait_until(lambda: len(c3.containers(app="survive")) == 3, what="exactly 3 containers")
    assert set(lost).isdisjoint(i["id"] for i in instances(c3, "survive"))
    wait_until(lambda: c3.served("survive") == 3, what="3 routed after the return")
    c3.api.delete("/v1/apps/survive")


def _inspect(ids: list[str]) -> list[tuple[str, str, int]]:
    out = subprocess.run(["docker", "inspect", "--format",
                          "{{.Id}} {{.State.StartedAt}} {{.RestartCount}}", *ids],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return sorted(tuple(line.split()) for line in out if line)  # type: ignore[misc]


def test_agent_killed_ten_times_adopts_its_containers(c3):
    c3.api.post("/v1/apps", {"name": "adopt"})
    assert deploy_new(c3, "adopt", 3)["status"] == "succeeded"
    before = _inspect(c3.containers(app="adopt"))
    assert len(before) == 3
    for _ in range(10):
        c3.cluster.stop_process("agent-node-1", sig=signal.SIGKILL)
        c3.cluster.start_process("agent-node-1")
        wait_until(lambda: _agent_up(c3, 1), timeout=15, what="agent back")
    # The restarted agent has looked at its containers twice and reported them: had it wanted to
    # replace one, it would have by now.
    wait_until(lambda: _agent_metric(c3, 1, "paas_agent_reconciles_total") >= 2
               and _agent_metric(c3, 1, 'paas_agent_heartbeats_total{result="ok"}') >= 1,
               timeout=30, ignore=(OSError,),
               what="two reconcile passes and a heartbeat after the last restart")
    assert _inspect(c3.containers(app="adopt")) == before
    assert all(i["state"] == "running" for i in instances(c3, "adopt"))
    c3.api.delete("/v1/apps/adopt")


def _agent_metric(c3: E2E, n: int, sample: str) -> float:
    """One sample of node `n`'s agent /metrics (0 if it is not there yet)."""
    import urllib.request

    url = f"http://{c3.cluster.node_ip(n)}:{c3.cluster.agent_admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
        for line in r.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
    return 0.0


def _agent_up(c3: E2E, n: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(
                f"http://{c3.cluster.node_ip(n)}:{c3.cluster.agent_admin_port}/healthz",
                timeout=1) as r:  # noqa: S310
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_controller_killed_during_deploys_resumes_every_deployment(c3):
    runs = int(os.environ.get("PAAS_FAULT_DEPLOYS", "20"))
    api = c3.api
    api.post("/v1/apps", {"name": "crashy"})
    base = c3.build("crashy", REPO / "examples" / "hello")
    assert c3.deploy("crashy", base["version"], 2)["status"] == "succeeded"
    rng = random.Random(7)
    outcomes = {"succeeded": 0, "failed": 0}
    for _ in range(runs):
        release = api.post("/v1/apps/crashy/releases", {"image": base["image"]})["release"]
        dep = api.post("/v1/apps/crashy/deployments",
                       {"release": release["version"], "replicas": 2})["deployment"]
        time.sleep(rng.uniform(0.2, 4.0))  # the kill lands at a random step: what is tested
        c3.cluster.stop_process("controller", sig=signal.SIGKILL)
        c3.cluster.start_process("controller")
        wait_until(lambda: _controller_up(c3), timeout=15, what="controller back")
        final = wait_until(lambda: (d := api.get(f"/v1/apps/crashy/deployments/{dep['id']}")
                                    ["deployment"])["status"] != "running" and d,
                           timeout=90, what=f"deployment {dep['id']} to end")
        outcomes[final["status"]] += 1
        if final["status"] == "failed":
            assert final["reason"], final
    versions = [r["version"] for r in api.get("/v1/apps/crashy/releases")["releases"]]
    assert versions == list(range(1, runs + 2)), "release numbers without gaps or duplicates"
    wait_until(lambda: _orphans(c3, "crashy") == (0, 0), timeout=30,
               what="no orphan containers or Consul services")
    print(f"controller kills: {runs}, deployments succeeded {outcomes['succeeded']}, failed "
          f"{outcomes['failed']}, releases {versions[0]}..{versions[-1]} gap-free, orphans 0")
    assert outcomes["succeeded"] + outcomes["failed"] == runs
    api.delete("/v1/apps/crashy")


def _controller_up(c3: E2E) -> bool:
    try:
        c3.api.get("/v1/nodes", timeout=2)
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _orphans(c3: E2E, app: str) -> tuple[int, int]:
    known = {i["id"] for i in instances(c3, app) if i["id"]}
    containers = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "paas.instance"}}',
         "--filter", f"label=paas.localcluster={c3.cluster.cluster_id}",
         "--filter", f"label=paas.app={app}"],
        capture_output=True, text=True, check=True).stdout.split()
    services = [s["Service"]["ID"] for s in c3.consul(f"/v1/health/service/{app}")]
    return (len(set(containers) - known), len(set(services) - known))


def test_draining_a_node_moves_its_instances_without_a_failed_request(c3):
    c3.api.post("/v1/apps", {"name": "mover"})
    assert deploy_new(c3, "mover", 3)["status"] == "succeeded"
    wait_until(lambda: c3.served("mover") == 3, what="3 routed")
    with Hammer(c3, "mover") as hammer:
        result = c3.api.post("/v1/nodes/node-1/drain", {"drain": True})
        [dep] = result["deployments"]
        final = c3.finish("mover", dep, timeout=60)
        assert final["status"] == "succeeded", final
    assert sum(hammer.statuses.values()) > 20 and set(hammer.statuses) == {200}, hammer.statuses
    assert "node-1" not in {i["node"] for i in instances(c3, "mover")}
    assert len(instances(c3, "mover")) == 3
    nodes = {n["name"]: n["status"] for n in c3.api.get("/v1/nodes")["nodes"]}
    assert nodes["node-1"] == "draining"
    c3.api.post("/v1/nodes/node-1/drain", {"drain": False})
    c3.api.delete("/v1/apps/mover")


def test_consul_server_stopped_for_30s_routes_keep_serving_and_all_comes_back(c3):
    c3.api.post("/v1/apps", {"name": "steady"})
    assert deploy_new(c3, "steady", 3)["status"] == "succeeded"
    wait_until(lambda: c3.served("steady") == 3, what="3 routed")
    ids = {i["id"] for i in instances(c3, "steady")}
    with Hammer(c3, "steady") as hammer:
        c3.cluster.stop_process("consul-server")
        time.sleep(30)  # the outage lasts 30 s: the duration is the scenario, not a wait
        during = dict(hammer.statuses)
        c3.cluster.start_process("consul-server")
        wait_until(lambda: c3.cluster._consul_leader(c3.cluster.consul_url), timeout=30,
                   what="consul leader again")
        wait_until(lambda: {s["Service"]["ID"] for s in c3.consul("/v1/health/service/steady")
                            if all(c["Status"] == "passing" for c in s["Checks"])} == ids,
                   timeout=30, what="every instance registered and passing again")
    assert sum(during.values()) > 100 and set(during) == {200}, during
    assert set(hammer.statuses) == {200}, hammer.statuses
    assert c3.served("steady") == 3
    # The platform works again: a scale goes through the whole flow.
    dep = c3.api.post("/v1/apps/steady/scale", {"replicas": {"web": 4}})["deployment"]
    final = c3.finish("steady", dep, timeout=60)
    assert final["status"] == "succeeded", final
    wait_until(lambda: c3.served("steady") == 4, what="4 routed")
    c3.api.delete("/v1/apps/steady")


def test_publish_pushes_to_the_registry_and_agents_pull_what_they_lack(c3):
    import json
    import urllib.request

    c3.api.post("/v1/apps", {"name": "pulled"})
    release = c3.build("pulled", REPO / "examples" / "hello")
    published = c3.api.post(f"/v1/apps/pulled/releases/{release['version']}/publish")
    ref = published["published"]["image"]
    assert ref == f"{c3.cluster.registry_address}/{c3.cluster.image_repo}/pulled:v1"
    with urllib.request.urlopen(f"http://{c3.cluster.registry_address}/v2/_catalog",
                                timeout=5) as r:  # noqa: S310 - loopback
        assert f"{c3.cluster.image_repo}/pulled" in json.loads(r.read())["repositories"]
    # No node has the registry's copy: the agents must pull it.
    subprocess.run(["docker", "rmi", ref], capture_output=True, check=True)
    dep = c3.deploy("pulled", release["version"], 2)
    assert dep["status"] == "succeeded", dep
    images = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}",
                             *c3.containers(app="pulled")],
                            capture_output=True, text=True, check=True).stdout.split()
    assert images and set(images) == {ref}
    c3.api.delete("/v1/apps/pulled")
