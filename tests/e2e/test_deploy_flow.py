"""Issue 3, end to end: control instance, integration-test gate, rolling replacement, promote,
rollback, concurrent requests and process types, on real Docker, Consul and HAProxy."""

from __future__ import annotations

import threading

import pytest

from paas.apiclient.client import ClientError
from tests.e2e.conftest import REPO, Hammer, app_dir, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAILING_TEST = "#!/bin/sh\necho \"checking $PAAS_TARGET_URL\"\necho 'FAIL: greeting missing' >&2\nexit 3\n"


def ready(e2e) -> None:
    wait_until(lambda: len([n for n in e2e.api.get("/v1/nodes")["nodes"]
                            if n["status"] == "ready"]) == 2, what="2 ready nodes")


def create(e2e, name: str) -> None:
    ready(e2e)
    e2e.api.post("/v1/apps", {"name": name})


def live_releases(e2e, app: str) -> set[int]:
    return {int(s["Service"]["Meta"]["paas_release"])
            for s in e2e.consul(f"/v1/health/service/{app}")
            if "live" in s["Service"]["Tags"]}


def test_failing_integration_test_keeps_the_old_release(e2e, tmp_path):
    create(e2e, "gate")
    v1 = e2e.build("gate", REPO / "examples" / "hello")
    assert e2e.deploy("gate", v1["version"], 2)["status"] == "succeeded"
    wait_until(lambda: e2e.get_via_router("gate")[0] == 200, what="gate serving")
    bad = e2e.build("gate", app_dir(tmp_path, test_sh=FAILING_TEST))
    with Hammer(e2e, "gate") as hammer:
        dep = e2e.deploy("gate", bad["version"], 2)
    assert dep["status"] == "failed" and dep["step"] == "test", dep
    assert "exited with code 3" in dep["reason"]
    assert "FAIL: greeting missing" in dep["log_tail"]
    wait_until(lambda: e2e.containers(app="gate", release=str(bad["version"])) == [],
               what="no container of the failed release")
    assert sum(hammer.statuses.values()) > 20
    assert set(hammer.statuses) == {200}, hammer.statuses
    assert set(hammer.bodies) == {f"hello from v{v1['version']}"}, hammer.bodies
    events = [e["message"] for e in e2e.api.get(f"/v1/apps/gate/events?deployment={dep['id']}")
              ["events"]]
    assert any("control instance" in m and "healthy" in m for m in events)
    e2e.api.delete("/v1/apps/gate")


def test_health_check_that_never_passes_fails_at_control(e2e, tmp_path):
    create(e2e, "sick")
    toml = '[health]\npath = "/nope"\n[deploy]\nhealthy_deadline = 4\n'
    release = e2e.build("sick", app_dir(tmp_path, toml=toml))
    dep = e2e.deploy("sick", release["version"], 2)
    assert dep["status"] == "failed" and dep["step"] == "control", dep
    assert "did not pass its health check within 4s" in dep["reason"]
    assert "listening on port" in dep["log_tail"], "the failing instance's log is shown"
    wait_until(lambda: e2e.containers(app="sick") == [], what="no container left")
    e2e.api.delete("/v1/apps/sick")


def test_good_release_replaces_every_replica_then_promote_and_rollback(e2e, tmp_path):
    create(e2e, "roll")
    api = e2e.api
    api.request("PATCH", "/v1/apps/roll/config", json_body={"set": {"GREETING": "first"}})
    v1 = e2e.build("roll", REPO / "examples" / "hello")
    assert v1["config"] == {"GREETING": "first"}
    assert e2e.deploy("roll", v1["version"], 3)["status"] == "succeeded"
    api.post("/v1/apps/roll/promote", {})
    old_containers = set(e2e.containers(app="roll"))
    assert len(old_containers) == 3

    with Hammer(e2e, "roll") as hammer:
        result = api.request("PATCH", "/v1/apps/roll/config",
                             json_body={"set": {"GREETING": "second"}})
        v2 = result["release"]
        assert v2["version"] == v1["version"] + 1 and v2["image_id"] == v1["image_id"]
        dep = e2e.finish("roll", result["deployment"])
    assert dep["status"] == "succeeded", dep
    assert set(hammer.statuses) == {200}, hammer.statuses

    instances = api.get("/v1/apps/roll/instances")["instances"]
    assert len(instances) == 3 and {i["release"] for i in instances} == {v2["version"]}
    assert {i["role"] for i in instances} == {"live"}, "the control instance is gone"
    wait_until(lambda: not set(e2e.containers(app="roll")) & old_containers,
               what="old containers removed")
    assert len(e2e.containers(app="roll")) == 3
    wait_until(lambda: live_releases(e2e, "roll") == {v2["version"]},
               what="only v2 live in consul")
    wait_until(lambda: "second" in e2e.get_via_router("roll")[1], what="v2 serving")

    # Promote: the KV pointer and the stable tag.
    api.post("/v1/apps/roll/promote", {"release": v2["version"]})
    kv = e2e.consul("/v1/kv/paas/apps/roll/stable?raw")
    assert kv == v2["version"]
    wait_until(lambda: all("stable" in s["Service"]["Tags"]
                           for s in e2e.consul("/v1/health/service/roll")), what="stable tags")
    releases = api.get("/v1/apps/roll/releases")["releases"]
    assert [r["version"] for r in releases if r["stable"]] == [v2["version"]]

    # Rollback: the previous stable release serves again, with its own config.
    with Hammer(e2e, "roll") as hammer:
        dep = api.post("/v1/apps/roll/rollback", {})["deployment"]
        assert dep["release"] == v1["version"]
        dep = e2e.finish("roll", dep)
    assert dep["status"] == "succeeded", dep
    assert set(hammer.statuses) == {200}, hammer.statuses
    wait_until(lambda: live_releases(e2e, "roll") == {v1["version"]}, what="v1 live again")
    status, body = e2e.get_via_router("roll")
    assert status == 200 and "first" in body and f"v{v1['version']}" in body
    e2e.api.delete("/v1/apps/roll")


def test_concurrent_requests_keep_release_numbers_and_refuse_a_second_deploy(e2e, tmp_path):
    create(e2e, "race")
    results: list[int] = []
    errors: list[Exception] = []

    def build() -> None:
        try:
            results.append(e2e.build("race", REPO / "examples" / "hello")["version"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    assert sorted(results) == [1, 2, 3, 4]
    listed = [r["version"] for r in e2e.api.get("/v1/apps/race/releases")["releases"]]
    assert listed == [1, 2, 3, 4]

    first = e2e.api.post("/v1/apps/race/deployments", {"release": 4, "replicas": 1})
    with pytest.raises(ClientError) as exc:
        e2e.api.post("/v1/apps/race/deployments", {"release": 3, "replicas": 1})
    assert exc.value.status == 409
    assert exc.value.body["deployment_id"] == first["deployment"]["id"]
    dep = first["deployment"]
    dep = e2e.finish("race", dep)
    assert dep["status"] == "succeeded"
    e2e.api.delete("/v1/apps/race")


def test_worker_process_type_runs_at_its_own_count_without_a_route(e2e, tmp_path):
    create(e2e, "procs")
    procfile = "web: ./start.sh\nworker: while true; do echo tick; sleep 2; done\n"
    release = e2e.build("procs", app_dir(tmp_path, procfile=procfile))
    assert set(release["processes"]) == {"web", "worker"}
    dep = e2e.deploy("procs", release["version"], {"web": 1, "worker": 2})
    assert dep["status"] == "succeeded", dep
    instances = e2e.api.get("/v1/apps/procs/instances")["instances"]
    workers = [i for i in instances if i["process"] == "worker"]
    assert len(workers) == 2 and all(i["state"] == "running" for i in workers)
    assert len(e2e.containers(app="procs", process="worker")) == 2
    services = e2e.consul("/v1/health/service/procs")
    assert {s["Service"]["Meta"]["paas_process"] for s in services} == {"web"}
    routed = e2e.routes()["apps"]["procs"]["servers"]
    assert len(routed) == 1
    # Scaling the workers alone keeps the web instance.
    web_before = [i["id"] for i in instances if i["process"] == "web"]
    dep = e2e.api.post("/v1/apps/procs/scale", {"replicas": {"worker": 1}})["deployment"]
    dep = e2e.finish("procs", dep)
    assert dep["status"] == "succeeded", dep
    wait_until(lambda: len(e2e.containers(app="procs", process="worker")) == 1,
               what="one worker left")
    after = e2e.api.get("/v1/apps/procs/instances")["instances"]
    assert [i["id"] for i in after if i["process"] == "web"] == web_before
    e2e.api.delete("/v1/apps/procs")


def test_auto_revert_after_a_failed_rollout_keeps_the_stable_release_serving(e2e, tmp_path):
    create(e2e, "revert")
    v1 = e2e.build("revert", REPO / "examples" / "hello")
    assert e2e.deploy("revert", v1["version"], 2)["status"] == "succeeded"
    e2e.api.post("/v1/apps/revert/promote", {})
    # This release is healthy as a control instance (and passes its test) but never as a live
    # one: the rollout fails after it began.
    start = (REPO / "examples" / "hello" / "start.sh").read_text().replace(
        "printf 'ok\\n' > /www/health",
        "[ \"$PAAS_ROLE\" = live ] || printf 'ok\\n' > /www/health")
    assert "PAAS_ROLE" in start
    bad_dir = app_dir(tmp_path, toml='[health]\npath = "/health"\n[test]\n'
                      'command = "./test.sh"\n[deploy]\nhealthy_deadline = 4\n'
                      'auto_revert = true\n')
    (bad_dir / "start.sh").write_text(start)
    bad = e2e.build("revert", bad_dir)
    with Hammer(e2e, "revert") as hammer:
        dep = e2e.deploy("revert", bad["version"], 2)
        assert dep["status"] == "failed" and dep["step"] == "rollout", dep
        deps = wait_until(lambda: [d for d in e2e.api.get("/v1/apps/revert/deployments")
                                   ["deployments"] if d["kind"] == "revert"
                                   and d["status"] != "running"], what="the revert")
    assert deps[0]["release"] == v1["version"] and deps[0]["status"] == "succeeded", deps
    assert set(hammer.statuses) == {200}, hammer.statuses
    wait_until(lambda: e2e.containers(app="revert", release=str(bad["version"])) == [],
               what="the failed release's containers removed")
    assert live_releases(e2e, "revert") == {v1["version"]}
    e2e.api.delete("/v1/apps/revert")


def test_a_crashed_container_leaves_routing_is_restarted_and_reported(e2e):
    """And no GET fails meanwhile (issue 15): the router sends a request the crashed
    instance dropped, or could not take, to the other one. Crashed twice: `docker kill`, then
    kill -9 of the app's server process inside the container."""
    import subprocess
    import time

    create(e2e, "crash")
    release = e2e.build("crash", REPO / "examples" / "hello")
    assert e2e.deploy("crash", release["version"], 2)["status"] == "succeeded"
    wait_until(lambda: len(e2e.routes()["apps"].get("crash", {}).get("servers", [])) == 2,
               what="2 routed")
    victim = e2e.api.get("/v1/apps/crash/instances")["instances"][0]
    [container] = e2e.containers(instance=victim["id"])
    with Hammer(e2e, "crash") as hammer:
        time.sleep(0.5)
        subprocess.run(["docker", "kill", container], capture_output=True, check=True)
        t0 = time.monotonic()
        wait_until(lambda: victim["address"] not in e2e.routes()["apps"]["crash"]["servers"],
                   timeout=10, interval=0.02, what="the crashed instance out of routing")
        print(f"out of routing {time.monotonic() - t0:.2f}s after the crash")
        after = wait_until(lambda: next((i for i in e2e.api.get("/v1/apps/crash/instances")
                                         ["instances"] if i["id"] == victim["id"]
                                         and i["restarts"] >= 1 and i["state"] == "running"),
                                        None),
                           timeout=30, what="the agent restarting it and reporting the restart")
        assert e2e.containers(instance=victim["id"]) == [container], "restarted in place"
        wait_until(lambda: after["address"] in e2e.routes()["apps"]["crash"]["servers"],
                   timeout=15, what="routed again")
        subprocess.run(["docker", "exec", container, "sh", "-c", "kill -9 $(pidof httpd)"],
                       capture_output=True, check=True)
        wait_until(lambda: next((i for i in e2e.api.get("/v1/apps/crash/instances")
                                 ["instances"] if i["id"] == victim["id"]
                                 and i["restarts"] >= 2 and i["state"] == "running"), None),
                   timeout=30, what="restarted after kill -9 of its process")
        wait_until(lambda: len(e2e.routes()["apps"]["crash"]["servers"]) == 2, timeout=15,
                   what="both routed again")
    print(f"GETs through the router during both crashes: {dict(hammer.statuses)}")
    assert set(hammer.statuses) == {200} and hammer.statuses[200] > 100, hammer.statuses
    e2e.api.delete("/v1/apps/crash")
