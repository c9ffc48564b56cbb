"""Issue 2, end to end on real Docker, Consul and HAProxy: deploy examples/hello with 3
replicas over 2 nodes, reach all of them through the router, survive an agent restart, and
delete the app cleanly."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import REPO, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_deploy_route_restart_and_delete(e2e):
    api = e2e.api
    wait_until(lambda: len([n for n in api.get("/v1/nodes")["nodes"]
                            if n["status"] == "ready"]) == 2, what="2 ready nodes")
    api.post("/v1/apps", {"name": "hello"})
    release = e2e.build("hello", REPO / "examples" / "hello")
    assert release["version"] == 1
    assert release["image"] == f"{e2e.cluster.image_repo}/hello:v1"

    dep = e2e.deploy("hello", 1, 3)
    assert dep["status"] == "succeeded", dep

    instances = api.get("/v1/apps/hello/instances")["instances"]
    assert len(instances) == 3
    assert {i["node"] for i in instances} == {"node-1", "node-2"}, "replicas spread over nodes"
    assert all(i["state"] == "running" for i in instances)

    # Requests through HAProxy with the app's Host reach every instance.
    ids = {i["id"] for i in instances}
    seen: set[str] = set()

    def all_seen() -> bool:
        for _ in range(12):
            status, body = e2e.get_via_router("hello")
            if status == 200:
                seen.update(i for i in ids if i in body)
        return seen == ids

    wait_until(all_seen, timeout=20, what="answers from all 3 instances")
    status, body = e2e.get_via_router("unknown-app")
    assert status == 404 and "no app" in body.lower()

    # docker ps shows exactly 3 labelled containers.
    containers = e2e.containers(app="hello")
    assert len(containers) == 3

    # Restarting an agent leaves container ids unchanged.
    before = sorted(e2e.containers(app="hello", node="node-1"))
    assert before
    e2e.cluster.stop_process("agent-node-1")
    e2e.cluster.start_process("agent-node-1")
    wait_until(lambda: all(i["state"] == "running"
                           for i in api.get("/v1/apps/hello/instances")["instances"]),
               what="instances running after the agent restart")
    assert sorted(e2e.containers(app="hello", node="node-1")) == before
    assert e2e.get_via_router("hello")[0] == 200

    # Deleting the app removes its containers, its Consul services and its route.
    api.delete("/v1/apps/hello")
    wait_until(lambda: e2e.containers(app="hello") == [], what="containers removed")
    wait_until(lambda: e2e.consul("/v1/health/service/hello") == [],
               what="consul services removed")
    wait_until(lambda: _kv_missing(e2e), what="route key removed")
    wait_until(lambda: "hello" not in e2e.routes()["apps"], what="router forgot hello")
    assert e2e.get_via_router("hello")[0] == 404


def _kv_missing(e2e) -> bool:
    import urllib.error

    try:
        e2e.consul("/v1/kv/paas/routes/hello")
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False
