"""The controller API in-process on a real SQLite store: auth, validation, errors as one JSON
sentence with the right status, state kept across a restart."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile

import pytest

from paas.controller.openapi import openapi_document


def tar_gz(entries: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


async def error_of(resp, status: int) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) >= {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


async def test_healthz_and_metrics_need_no_token(api):
    assert (await api.get("/healthz")).status == 200
    resp = await api.get("/metrics")
    assert resp.status == 200
    assert "paas_releases_total" in await resp.text()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic abc"}])
async def test_api_refuses_missing_or_wrong_token(api, headers):
    await error_of(await api.get("/v1/apps", headers=headers), 401)
    await error_of(await api.post("/v1/apps", json={"name": "ok"}, headers=headers), 401)


async def test_join_token_is_only_for_agent_routes(api, join):
    await error_of(await api.get("/v1/apps", headers=join), 403)
    resp = await api.put("/v1/nodes/node-1", json={"address": "127.0.0.2"}, headers=join)
    assert resp.status == 200


async def test_a_node_is_removed_only_once_its_agent_is_down(start_api, settings, admin, join):
    import asyncio
    import dataclasses

    api = await start_api(dataclasses.replace(settings, node_down_after=0.3))
    resp = await api.put("/v1/nodes/node-1", json={"address": "127.0.0.2"}, headers=join)
    assert resp.status == 200
    # The join token drains it (paas host remove on the machine) but cannot list apps.
    assert (await api.post("/v1/nodes/node-1/drain", json={}, headers=join)).status == 200
    msg = await error_of(await api.delete("/v1/nodes/node-1", headers=join), 409)
    assert "still up: stop its agent first" in msg
    await asyncio.sleep(0.5)  # no heartbeat since: down
    resp = await api.delete("/v1/nodes/node-1", headers=join)
    assert resp.status == 200 and (await resp.json())["removed"] == "node-1"
    nodes = (await (await api.get("/v1/nodes", headers=admin)).json())["nodes"]
    assert nodes == []
    await error_of(await api.delete("/v1/nodes/node-1", headers=admin), 404)
    await error_of(await api.delete("/v1/nodes/Bad_Name", headers=admin), 400)


async def test_token_file_is_private(api, settings):
    for name in ("admin.token", "join.token"):
        mode = stat.S_IMODE(os.stat(settings.data_dir / name).st_mode)
        assert mode == 0o600


@pytest.mark.parametrize("name", ["../x", "A_B", "a;b", "a" * 64, "", "-a", "1abc", None, 5,
                                  "hello-", "a-", "paas-router", "paas-x"])
async def test_invalid_app_names_are_refused(api, admin, name):
    msg = await error_of(await api.post("/v1/apps", json={"name": name}, headers=admin), 400)
    assert "app name" in msg
    assert (await (await api.get("/v1/apps", headers=admin)).json())["apps"] == []
    if name == "hello-":
        assert msg == ("invalid app name 'hello-': it must not end with '-', since "
                       "hello-.<domain> would not be a valid host name")
    if name == "paas-router":  # the platform's own Consul services (paas.selfregister)
        assert msg == ("invalid app name 'paas-router': names starting with 'paas-' are the "
                       "platform's own (its daemons' Consul services)")


async def test_app_lifecycle_and_conflicts(api, admin):
    resp = await api.post("/v1/apps", json={"name": "hello"}, headers=admin)
    assert resp.status == 201
    app = (await resp.json())["app"]
    assert app["hostnames"] == ["hello.localhost"]
    await error_of(await api.post("/v1/apps", json={"name": "hello"}, headers=admin), 409)
    listed = (await (await api.get("/v1/apps", headers=admin)).json())["apps"]
    assert [a["name"] for a in listed] == ["hello"]
    assert (await api.delete("/v1/apps/hello", headers=admin)).status == 200
    await error_of(await api.get("/v1/apps/hello", headers=admin), 404)


async def test_unknown_app_and_bad_json(api, admin):
    await error_of(await api.get("/v1/apps/nope", headers=admin), 404)
    await error_of(await api.post("/v1/apps/nope/releases", data=tar_gz({"Dockerfile": b"x"}),
                                  headers={**admin, "Content-Type": "application/gzip"}), 404)
    await error_of(await api.post("/v1/apps/nope/deployments", json={}, headers=admin), 404)
    await error_of(await api.post("/v1/apps", data=b"{not json",
                                  headers={**admin, "Content-Type": "application/json"}), 400)
    await error_of(await api.get("/v1/no/such/route", headers=admin), 404)


EVIL_CONTEXTS = {
    "not gzip": b"plain bytes, not an archive",
    "gzip of non-tar": gzip.compress(b"hello world" * 100),
    "absolute path": tar_gz({"/etc/evil": b"x", "Dockerfile": b"FROM paas/busybox:latest"}),
    "dot-dot": tar_gz({"../evil": b"x", "Dockerfile": b"FROM paas/busybox:latest"}),
    "symlink out": tar_gz({"Dockerfile": b"FROM paas/busybox:latest"},
                          symlinks={"passwd": "/etc/passwd"}),
    "symlink climbing": tar_gz({"Dockerfile": b"FROM paas/busybox:latest"},
                               symlinks={"a/b": "../../x"}),
}


@pytest.mark.parametrize("case", sorted(EVIL_CONTEXTS))
async def test_bad_build_contexts_are_refused_and_change_nothing(api, admin, case):
    await api.post("/v1/apps", json={"name": "web"}, headers=admin)
    resp = await api.post("/v1/apps/web/releases", data=EVIL_CONTEXTS[case],
                          headers={**admin, "Content-Type": "application/gzip"})
    await error_of(resp, 400)
    releases = (await (await api.get("/v1/apps/web/releases", headers=admin)).json())["releases"]
    assert releases == []
    app = (await (await api.get("/v1/apps/web", headers=admin)).json())["app"]
    assert app["latest_release"] is None


async def test_deploy_without_release_or_with_bad_replicas(api, admin):
    await api.post("/v1/apps", json={"name": "web"}, headers=admin)
    await error_of(await api.post("/v1/apps/web/deployments", json={"replicas": 1},
                                  headers=admin), 404)
    await error_of(await api.post("/v1/apps/web/deployments", json={"release": "x"},
                                  headers=admin), 400)


async def test_replica_bounds(api, admin, settings):
    from paas.controller.service import CONTROLLER

    await api.post("/v1/apps", json={"name": "web"}, headers=admin)
    ctl = api.server.app[CONTROLLER]
    # A release made directly in the store: the build path needs Docker (tested end to end).
    ctl.store.add_release(app="web", version=1, image="paas/web:v1", image_id="sha256:x",
                          source="test", config={}, processes={"web": None}, test_command=None,
                          health={"path": "/health"}, policy={}, created_by="admin")
    for bad in (-1, settings.max_replicas + 1, "3", 1.5, True, {"worker": 1}):
        msg = await error_of(await api.post("/v1/apps/web/deployments",
                                            json={"replicas": bad}, headers=admin), 400)
        assert "replicas" in msg or "process type" in msg
    assert (await (await api.get("/v1/apps/web/deployments", headers=admin)).json()) == {
        "deployments": []}


async def test_state_survives_a_restart(start_api, settings):
    first = await start_api()
    token = (settings.data_dir / "admin.token").read_text().strip()
    admin = {"Authorization": f"Bearer {token}"}
    assert (await first.post("/v1/apps", json={"name": "keep"}, headers=admin)).status == 201
    join = {"Authorization": "Bearer " + (settings.data_dir / "join.token").read_text().strip()}
    await first.put("/v1/nodes/node-1", json={"address": "127.0.0.2", "cpu": 2,
                                              "memory_mb": 2048}, headers=join)
    await first.close()
    second = await start_api()
    assert (settings.data_dir / "admin.token").read_text().strip() == token
    apps = (await (await second.get("/v1/apps", headers=admin)).json())["apps"]
    assert [a["name"] for a in apps] == ["keep"]
    nodes = (await (await second.get("/v1/nodes", headers=admin)).json())["nodes"]
    assert [(n["name"], n["memory_mb"]) for n in nodes] == [("node-1", 2048)]


async def test_long_poll_returns_when_assignments_change(api, admin, join):
    import asyncio

    from paas.controller.service import CONTROLLER

    await api.put("/v1/nodes/node-1", json={"address": "127.0.0.2"}, headers=join)
    first = await (await api.get("/v1/nodes/node-1/assignments?index=0", headers=join)).json()
    assert first["instances"] == []
    waiting = asyncio.ensure_future(api.get(
        f"/v1/nodes/node-1/assignments?index={first['index']}&wait=20", headers=join))
    await asyncio.sleep(0.2)  # not a wait for something: nothing changed, so the poll is held
    assert not waiting.done()
    ctl = api.server.app[CONTROLLER]
    await api.post("/v1/apps", json={"name": "web"}, headers=admin)
    ctl.store.add_release(app="web", version=1, image="paas/web:v1", image_id="sha256:x",
                          source="test", config={"A": "b"}, processes={"web": "./run"},
                          test_command=None, health={"path": "/health"}, policy={},
                          created_by="admin")
    ctl.store.add_instances([{"id": "web-v1-web-abcdef", "app": "web", "release": 1,
                              "process": "web", "role": "live", "node": "node-1"}])
    resp = await asyncio.wait_for(waiting, 10)  # woken by the change, well before its wait=20
    body = await resp.json()
    assert body["index"] > first["index"]
    [inst] = body["instances"]
    assert inst["id"] == "web-v1-web-abcdef" and inst["env"] == {"A": "b"}
    assert inst["command"] == ["/bin/sh", "-c", "./run"] and inst["desired"] == "running"
    assert body["stopping"] == 0
    # Told to stop: no longer assigned, but counted until the node reports it gone (what
    # `paas host remove` waits for before it stops the node's agent).
    ctl.store.set_desired(["web-v1-web-abcdef"], "stopped")
    body = await (await api.get("/v1/nodes/node-1/assignments?index=0", headers=join)).json()
    assert (body["instances"], body["stopping"]) == ([], 1)
    ctl.store.report_instances("node-1", [])
    body = await (await api.get("/v1/nodes/node-1/assignments?index=0", headers=join)).json()
    assert body["stopping"] == 0


async def test_heartbeat_validation(api, join):
    await error_of(await api.post("/v1/nodes/ghost/heartbeat", json={"instances": []},
                                  headers=join), 404)
    await api.put("/v1/nodes/node-1", json={"address": "127.0.0.2"}, headers=join)
    await error_of(await api.post("/v1/nodes/node-1/heartbeat",
                                  json={"instances": [{"id": 1}]}, headers=join), 400)
    await error_of(await api.put("/v1/nodes/node-2", json={"address": "not-an-ip"},
                                 headers=join), 400)
    await error_of(await api.put("/v1/nodes/Bad_Name", json={"address": "127.0.0.3"},
                                 headers=join), 400)


def test_openapi_describes_every_route():
    from paas.controller.server import make_app
    from paas.controller.settings import ControllerSettings

    app = make_app(ControllerSettings())
    registered = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
                  if r.method != "HEAD" and not r.resource.canonical.startswith("/git/")}
    documented = {(m, p) for p, ops in openapi_document()["paths"].items() for m in ops}
    # The logs route is documented before its handler lands (paas/controller/logstream.py).
    assert registered == documented - {("get", "/v1/apps/{app}/logs")} or registered == documented
    json.dumps(openapi_document())


@pytest.mark.docker
async def test_a_failing_build_says_so_with_the_log_tail_and_changes_nothing(api, admin):
    """Needs the real Docker engine (it is part of `make test`, not `make test-quick`)."""
    await api.post("/v1/apps", json={"name": "broken"}, headers=admin)
    context = tar_gz({"Dockerfile": b"FROM paas/busybox:latest\nRUN echo about-to-fail && false\n"})
    resp = await api.post("/v1/apps/broken/releases", data=context,
                          headers={**admin, "Content-Type": "application/gzip"})
    msg = await error_of(resp, 422)
    assert "failed to build" in msg
    body = await resp.json()
    assert "about-to-fail" in body["log_tail"]
    releases = (await (await api.get("/v1/apps/broken/releases", headers=admin)).json())
    assert releases["releases"] == []
    app = (await (await api.get("/v1/apps/broken", headers=admin)).json())["app"]
    assert app["latest_release"] is None


async def test_domains_are_validated_unique_and_keep_the_default(api, admin):
    await api.post("/v1/apps", json={"name": "one"}, headers=admin)
    await api.post("/v1/apps", json={"name": "two"}, headers=admin)
    resp = await api.put("/v1/apps/one/domains", json={"hostnames": ["WWW.Example.org."]},
                         headers=admin)
    assert resp.status == 200
    assert (await resp.json())["app"]["hostnames"] == ["one.localhost", "www.example.org"]
    await error_of(await api.put("/v1/apps/two/domains", json={"hostnames": ["www.example.org"]},
                                 headers=admin), 409)
    await error_of(await api.put("/v1/apps/two/domains", json={"hostnames": ["bad host"]},
                                 headers=admin), 400)
    app = (await (await api.get("/v1/apps/two", headers=admin)).json())["app"]
    assert app["hostnames"] == ["two.localhost"]


async def test_basic_auth_password_is_a_token(api, settings):
    import base64

    token = (settings.data_dir / "admin.token").read_text().strip()
    good = base64.b64encode(f"git:{token}".encode()).decode()
    bad = base64.b64encode(b"git:wrong").decode()
    assert (await api.get("/v1/apps", headers={"Authorization": f"Basic {good}"})).status == 200
    await error_of(await api.get("/v1/apps", headers={"Authorization": f"Basic {bad}"}), 401)
    await error_of(await api.get("/v1/apps", headers={"Authorization": "Basic %%%"}), 401)


async def test_what_cannot_be_placed_stays_pending_with_the_reason(api, admin, join):
    from paas.controller.service import CONTROLLER

    ctl = api.server.app[CONTROLLER]
    await api.put("/v1/nodes/small", json={"address": "127.0.0.2", "cpu": 1,
                                           "memory_mb": 300}, headers=join)
    await api.post("/v1/apps", json={"name": "big"}, headers=admin)
    ctl.store.add_release(app="big", version=1, image="paas/big:v1", image_id="sha256:x",
                          source="test", config={}, processes={"web": None}, test_command=None,
                          health={"path": "/health"}, policy={}, created_by="admin")
    ctl.store.set_app_fields("big", scale={"web": 3}, live_release=1)
    plan = ctl.nodes.reconcile_once()
    assert [(p.process, p.count) for p in plan.place] == [("web", 3)]
    rows = (await (await api.get("/v1/apps/big/instances", headers=admin)).json())["instances"]
    placed = [r for r in rows if r["node"] == "small"]
    pending = [r for r in rows if r["state"] == "pending" and r["node"] is None]
    assert len(placed) == 2 and len(pending) == 1  # 2 x 128 MB fit in 300 MB
    assert pending[0]["reason"] == "insufficient memory on 1 node"
    # This controller's Consul does not answer: the listing still comes, without health.
    assert [r["health"] for r in rows] == [None] * 3
    # Running the reconcile again places nothing more and keeps the reason.
    assert [(p.process, p.count) for p in ctl.nodes.reconcile_once().place] == [("web", 1)]
    rows = (await (await api.get("/v1/apps/big/instances", headers=admin)).json())["instances"]
    assert len([r for r in rows if r["node"] == "small"]) == 2


@pytest.mark.parametrize("wait", ["abc", "nan", "inf-"])
async def test_bad_wait_parameters_are_one_clear_error(api, admin, join, wait):
    await api.put("/v1/nodes/node-1", json={"address": "127.0.0.2"}, headers=join)
    await error_of(await api.get(f"/v1/nodes/node-1/assignments?wait={wait}", headers=join),
                   400)
    await api.post("/v1/apps", json={"name": "waits"}, headers=admin)
    await error_of(await api.get(f"/v1/apps/waits/deployments/1?wait={wait}", headers=admin),
                   400)


async def test_app_urls_carry_the_routers_port_unless_it_is_80(start_api, settings):
    import dataclasses

    for port, url in ((8080, "http://shop.localhost:8080/"), (80, "http://shop.localhost/")):
        api = await start_api(dataclasses.replace(settings, public_port=port,
                                                  data_dir=settings.data_dir / str(port)))
        token = (settings.data_dir / str(port) / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        resp = await api.post("/v1/apps", json={"name": "shop"}, headers=headers)
        assert resp.status == 201
        assert (await resp.json())["app"]["urls"] == [url]


async def test_prometheus_targets_need_no_token_and_say_when_consul_is_away(api):
    """Prometheus reads /sd/prometheus/{kind} as it reads /metrics: on the server's private
    address, with no token. This controller's Consul does not answer."""
    msg = await error_of(await api.get("/sd/prometheus/apps"), 503)
    assert msg.startswith("Consul did not answer")
    msg = await error_of(await api.get("/sd/prometheus/nodes"), 404)
    assert msg == "no targets of kind 'nodes': use one of apps, paas, haproxy, latency"


async def test_app_metrics_without_prometheus_is_one_sentence(api, admin):
    await api.post("/v1/apps", json={"name": "quiet"}, headers=admin)
    msg = await error_of(await api.get("/v1/apps/quiet/metrics", headers=admin), 503)
    assert msg == ("this cluster runs no Prometheus (the controller's --prometheus-url is not "
                   "set)")
    msg = await error_of(await api.get("/v1/apps/quiet/metrics?since=3y", headers=admin), 400)
    assert msg.startswith("since must be a duration")
    await error_of(await api.get("/v1/apps/nope/metrics", headers=admin), 404)
    assert (await api.get("/v1/apps/quiet/metrics")).status == 401


@pytest.mark.parametrize("path, kind", [("/ui/", "text/html"), ("/ui/app.js", "text/javascript"),
                                        ("/ui/style.css", "text/css")])
async def test_the_dashboard_is_served_with_nothing_from_elsewhere(api, path, kind):
    """Its files need no token (its pages ask for one); they load nothing from another origin
    (an operator's network may have no CDN), and the policy allows no inline script."""
    resp = await api.get(path)
    assert resp.status == 200 and resp.content_type == kind
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    text = (await resp.text()).replace("http://www.w3.org/2000/svg", "")  # a name, not a URL
    assert "http://" not in text and "https://" not in text
    if kind == "text/javascript":
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text  # text only
    assert (await api.get("/ui/..%2Fdata%2Fstate.db")).status == 404
    assert (await api.get("/ui/secret.txt")).status == 404


@pytest.mark.parametrize("path, sentence", [
    # The three 500s schemathesis found (issue 13): integers beyond 64 bits.
    ("/v1/apps/big/deployments/99999999999999999999999",
     "deployment id must be an integer from 1 to 9223372036854775807"),
    ("/v1/apps/big/events?after=99999999999999999999999",
     "after must be an integer from 0 to 9223372036854775807"),
    ("/v1/apps/big/events?deployment=99999999999999999999999",
     "deployment must be an integer from 1 to 9223372036854775807"),
    ("/v1/apps/big/events?after=-1", "after must be an integer from 0 to 9223372036854775807"),
    ("/v1/apps/big/releases/0", "release must be an integer from 1 to 9223372036854775807"),
])
async def test_integers_out_of_range_are_one_sentence_not_a_server_error(
        api, admin, path: str, sentence: str) -> None:
    await api.post("/v1/apps", json={"name": "big"}, headers=admin)
    assert await error_of(await api.get(path, headers=admin), 400) == sentence
