"""The router against a real Consul dev agent and a real HAProxy, with tiny HTTP backends.

Each test uses its own app names on the shared Consul + router (module fixtures) and removes
what it registered; the outage test runs a Consul and a router of its own, the HAProxy-crash
test a router of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time

import pytest

# Once /routes shows a state, the reload counters already count it: the router moves its layout
# and counters together after HAProxy took the change (router/applier.py), and HAProxy.reload
# returns only once the master counted the reload. So a test reads its baseline right after
# waiting for the state, without a pause to "settle".

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


def instance_id(app: str, process: str = "web", release: int = 1) -> str:
    return f"{app}-v{release}-{process}-{secrets.token_hex(3)}"


def addr(backend) -> str:
    return f"{backend.host}:{backend.port}"


def register(consul, cleanup, app: str, backend, **kw) -> str:
    iid = instance_id(app, kw.get("process", "web"), kw.get("release", 1))
    consul.register(app=app, instance_id=iid, address=backend.host, port=backend.port, **kw)
    cleanup(instance=iid)
    return iid


def hits(router, host: str, n: int) -> list[str]:
    bodies = []
    for _ in range(n):
        status, _, body = router.get(host)
        assert status == 200, (status, body)
        bodies.append(body)
    return bodies


class Load:
    """Requests in a loop from a thread, recording every failure (a failed request is a bug)."""

    def __init__(self, router, host: str, expected: set[str]) -> None:
        self.router, self.host, self.expected = router, host, expected
        self.failures: list[object] = []
        self.count = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{host}")

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                status, _, body = self.router.get(self.host)
                if status != 200 or body not in self.expected:
                    self.failures.append((status, body[:80]))
            except OSError as exc:
                self.failures.append(exc)
            self.count += 1

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


@pytest.mark.slow
def test_routes_host_to_passing_live_web_instances_only(consul, router, backends, cleanup, wait_for):
    a = backends("hello-a", "127.0.5.2")
    b = backends("hello-b", "127.0.5.3")
    control = backends("hello-control", "127.0.5.4")
    worker = backends("hello-worker", "127.0.5.5")
    consul.put_route("hello", ["hello.localhost", "www.hello.test"])
    cleanup(app="hello")
    register(consul, cleanup, "hello", a)
    register(consul, cleanup, "hello", b)
    control_id = register(consul, cleanup, "hello", control, role="control", release=2)
    register(consul, cleanup, "hello", worker, process="worker")

    wait_for(lambda: router.servers("hello") == {addr(a), addr(b)}, timeout=10,
             what="both live web instances in /routes")
    wait_for(lambda: control_id in consul.passing("hello"), timeout=20,
             what="the control instance to pass its check too")
    # Not a wait for something: a window in which a wrong change for the control instance would
    # reach the router. That nothing changes in it is what this test checks.
    time.sleep(0.3)
    routes = router.routes()
    assert routes["apps"]["hello"] == {"hostnames": ["hello.localhost", "www.hello.test"],
                                       "servers": sorted([addr(a), addr(b)])}
    assert routes["generation"] >= 1

    bodies = hits(router, "hello.localhost", 20) + hits(router, "HELLO.localhost:18080", 4) \
        + hits(router, "www.hello.test", 4)
    assert set(bodies) == {"hello-a", "hello-b"}
    assert control.hits == 0 and worker.hits == 0


def test_unknown_host_gets_404_page(router):
    status, content_type, body = router.get("nobody.localhost")
    assert status == 404
    assert content_type.startswith("text/html")
    assert "No app is routed for this host name" in body


def test_app_without_instances_gets_503_page(consul, router, cleanup, wait_for):
    consul.put_route("empty", ["empty.localhost"])
    cleanup(app="empty")
    wait_for(lambda: router.servers("empty") == set(), timeout=20, what="empty routed, no servers")
    status, content_type, body = router.get("empty.localhost")
    assert status == 503
    assert content_type.startswith("text/html")
    assert "no healthy instance" in body


def test_admin_endpoints(router):
    status, body = router.admin("/healthz")
    assert status == 200 and '"status": "ok"' in body
    status, body = router.admin("/metrics")
    assert status == 200 and "paas_router_reloads_total" in body
    routes = router.routes()
    assert set(routes) == {"generation", "apps"} and isinstance(routes["generation"], int)


@pytest.mark.slow
def test_instance_changes_apply_without_reload(consul, router, backends, cleanup, wait_for):
    a = backends("churn-a", "127.0.5.2")
    b = backends("churn-b", "127.0.5.3")
    consul.put_route("churn", ["churn.localhost"])
    cleanup(app="churn")
    register(consul, cleanup, "churn", a)
    b_id = register(consul, cleanup, "churn", b)
    wait_for(lambda: router.servers("churn") == {addr(a), addr(b)}, timeout=20,
             what="two instances routed")
    reloads, master_reloads = router.metric("paas_router_reloads_total"), router.haproxy_reloads()
    runtime = router.metric("paas_router_runtime_updates_total")

    with Load(router, "churn.localhost", {"churn-a", "churn-b"}) as load:
        # Deregistering one instance removes it from /routes and from traffic (how soon:
        # bench/reactions).
        consul.deregister(b_id)
        wait_for(lambda: router.servers("churn") == {addr(a)}, timeout=20,
                 what="the deregistered instance to leave /routes")
        # The load sends one request at a time: two more answered means the one that may have
        # been on its way to b has finished.
        sent = load.count
        wait_for(lambda: load.count >= sent + 2, timeout=20, what="requests in flight to end")
        b_before = b.hits
        assert set(hits(router, "churn.localhost", 10)) == {"churn-a"}
        assert b.hits == b_before

        # A new instance joins through the runtime API too.
        register(consul, cleanup, "churn", b)
        wait_for(lambda: router.servers("churn") == {addr(a), addr(b)}, timeout=20,
                 what="the new instance in /routes")
        # Both serve: counted at the backends, since this client and the load's can take
        # turns in step with round robin, so that one client alone sees a single backend.
        a_before, b_before = a.hits, b.hits
        hits(router, "churn.localhost", 10)
        wait_for(lambda: a.hits > a_before and b.hits > b_before, timeout=20,
                 what="both instances to serve")
    assert load.count > 20 and load.failures == []

    assert router.metric("paas_router_reloads_total") == reloads
    assert router.haproxy_reloads() == master_reloads
    assert router.metric("paas_router_runtime_updates_total") >= runtime + 2


@pytest.mark.slow
def test_new_app_reloads_without_failing_requests(consul, router, backends, cleanup, wait_for):
    steady = backends("steady", "127.0.5.2")
    fresh = backends("fresh", "127.0.5.3")
    consul.put_route("steady", ["steady.localhost"])
    cleanup(app="steady")
    register(consul, cleanup, "steady", steady)
    fresh_id = register(consul, cleanup, "fresh", fresh)
    wait_for(lambda: router.servers("steady") == {addr(steady)}, timeout=20, what="steady routed")
    wait_for(lambda: fresh_id in consul.passing("fresh"), timeout=20, what="fresh passing")
    reloads, master_reloads = router.metric("paas_router_reloads_total"), router.haproxy_reloads()

    with Load(router, "steady.localhost", {"steady"}) as load:
        consul.put_route("fresh", ["fresh.localhost"])
        cleanup(app="fresh")
        wait_for(lambda: router.servers("fresh") == {addr(fresh)}, timeout=20, what="fresh routed")
        assert router.get("fresh.localhost")[2] == "fresh"
        sent = load.count  # the load goes on through the reloaded HAProxy for a while
        wait_for(lambda: load.count >= sent + 20, timeout=20, what="20 requests after the reload")

    assert router.metric("paas_router_reloads_total") == reloads + 1
    assert router.haproxy_reloads() == master_reloads + 1
    assert load.count > 20 and load.failures == []


@pytest.mark.slow
def test_outgrowing_the_slots_reloads_with_more(consul, router, backends, cleanup, wait_for):
    servers = [backends(f"grow-{i}", f"127.0.5.{2 + i}") for i in range(3)]
    consul.put_route("grow", ["grow.localhost"])
    cleanup(app="grow")
    register(consul, cleanup, "grow", servers[0])
    register(consul, cleanup, "grow", servers[1])
    wait_for(lambda: router.servers("grow") == {addr(s) for s in servers[:2]}, timeout=20,
             what="two instances in the two slots")
    reloads = router.metric("paas_router_reloads_total")
    register(consul, cleanup, "grow", servers[2])
    wait_for(lambda: router.servers("grow") == {addr(s) for s in servers}, timeout=10,
             what="a third instance")
    assert router.metric("paas_router_reloads_total") == reloads + 1
    assert set(hits(router, "grow.localhost", 9)) == {"grow-0", "grow-1", "grow-2"}


@pytest.mark.slow
def test_keeps_serving_last_routes_while_consul_is_down(backends, wait_for, start_consul,
                                                        start_router):
    backend = backends("lasting", "127.0.5.2")
    with start_consul() as consul, start_router(consul.url) as router:
        consul.put_route("lasting", ["lasting.localhost"])
        iid = instance_id("lasting")
        consul.register(app="lasting", instance_id=iid, address=backend.host, port=backend.port)
        wait_for(lambda: router.servers("lasting") == {addr(backend)}, timeout=10,
                 what="lasting routed")
        generation = router.routes()["generation"]

        consul.proc.terminate()
        consul.proc.wait(10)
        wait_for(lambda: router.metric("paas_router_consul_up") == 0
                 and router.metric("paas_router_consul_errors_total") >= 3, timeout=30,
                 what="the router to notice the outage and retry with backoff")

        assert router.admin("/healthz")[0] == 200
        assert router.routes()["apps"]["lasting"]["servers"] == [addr(backend)]
        assert router.routes()["generation"] == generation
        assert set(hits(router, "lasting.localhost", 5)) == {"lasting"}
        assert router.metric("paas_router_consul_up") == 0
        assert router.metric("paas_router_consul_errors_total") >= 3
        assert router.log().count("Consul unreachable") == 1  # once per outage, not per retry

        # A clean stop (an upgrade): exit 0, and HAProxy serves on, Consul still away.
        haproxy_pid = int((router.state_dir / "haproxy.pid").read_text())
        router.handover = True
        router.proc.terminate()
        assert router.proc.wait(10) == 0
        assert _alive(haproxy_pid)
        assert set(hits(router, "lasting.localhost", 5)) == {"lasting"}

    # The next router, with Consul still away, adopts that HAProxy: the same process, the
    # same routes, read back from the layout it kept on disk.
    with start_router(consul.url, after=router) as second:
        assert json.loads(second.admin("/healthz")[1])["haproxy_pid"] == haproxy_pid
        assert second.routes()["apps"]["lasting"]["servers"] == [addr(backend)]
        assert set(hits(second, "lasting.localhost", 5)) == {"lasting"}
        # The machine restarts: HAProxy is gone too. The next router starts one on the last
        # routes it applied, not an empty one answering 404.
        second.handover = True
        second.proc.kill()
        second.proc.wait(10)
        os.kill(haproxy_pid, signal.SIGKILL)
        wait_for(lambda: not _alive(haproxy_pid), timeout=10, what="HAProxy gone")
    with start_router(consul.url, after=second) as third:
        assert json.loads(third.admin("/healthz")[1])["haproxy_pid"] != haproxy_pid
        assert third.routes()["apps"]["lasting"]["servers"] == [addr(backend)]
        assert set(hits(third, "lasting.localhost", 5)) == {"lasting"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_restarts_haproxy_on_the_last_routes_when_it_dies(consul, backends, wait_for,
                                                         start_router):
    backend = backends("phoenix", "127.0.5.2")
    with start_router(consul.url) as router:
        consul.put_route("phoenix", ["phoenix.localhost"])
        iid = instance_id("phoenix")
        consul.register(app="phoenix", instance_id=iid, address=backend.host, port=backend.port)
        try:
            wait_for(lambda: router.servers("phoenix") == {addr(backend)}, timeout=10,
                     what="phoenix routed")
            # The master this router started, found by the pid file it wrote.
            master = int((router.state_dir / "haproxy.pid").read_text())
            os.kill(master, signal.SIGKILL)
            wait_for(lambda: json.loads(router.admin("/healthz")[1]).get("haproxy_pid")
                     not in (None, master), timeout=10, what="a new HAProxy master")
            assert router.metric("paas_router_haproxy_restarts_total") == 1
            wait_for(lambda: router.get("phoenix.localhost")[2] == "phoenix", timeout=20,
                     what="traffic through the new HAProxy")
            assert router.servers("phoenix") == {addr(backend)}
        finally:
            consul.deregister(iid)
            consul.delete_route("phoenix")


def test_haproxy_exports_each_apps_golden_signals_and_both_register_in_consul(
        consul, router, backends, cleanup, wait_for):
    """Monitoring: HAProxy's built-in exporter on the admin host gives per-app (backend) and
    per-instance (server) request counts by status class, and the router registers itself
    and the exporter in Consul, where Prometheus finds them."""
    a = backends("golden-a", "127.0.5.2")
    consul.put_route("golden", ["golden.localhost"])
    cleanup(app="golden")
    register(consul, cleanup, "golden", a)
    wait_for(lambda: router.servers("golden") == {addr(a)}, timeout=20, what="golden routed")
    assert set(hits(router, "golden.localhost", 3)) == {"golden-a"}

    status, text = router.admin("/metrics", port=router.exporter_port)
    assert status == 200
    served = [line for line in text.splitlines()
              if line.startswith("haproxy_backend_http_responses_total{")
              and 'proxy="app_golden"' in line and 'code="2xx"' in line]
    assert served and float(served[0].rsplit(" ", 1)[1]) >= 3, served
    assert 'haproxy_server_current_sessions{proxy="app_golden",server="s1"}' in text
    assert router.admin("/other", port=router.exporter_port)[0] == 404
    # The response-time histogram per app and server slot that the exporter lacks
    # (latency.lua in HAProxy); the slot is the exporter's server name.
    status, text = router.admin("/latency", port=router.exporter_port)
    assert status == 200
    count = [line for line in text.splitlines() if line.startswith(
        'paas_haproxy_response_seconds_count{app="golden",server="s1"}')]
    assert count and int(count[0].rsplit(" ", 1)[1]) >= 3, text
    assert 'paas_haproxy_response_seconds_bucket{app="golden",server="s1",le="+Inf"}' in text

    def registered() -> dict[str, dict]:
        found = {}
        for name in ("paas-router", "paas-haproxy"):
            for entry in json.loads(consul._call("GET", f"/v1/health/service/{name}")):
                found[name] = entry["Service"]
        return found
    # (An earlier test's router registered under the same ids, with its own ports.)
    wait_for(lambda: {n: s["Port"] for n, s in registered().items()} == {
        "paas-router": router.admin_port, "paas-haproxy": router.exporter_port}, timeout=40,
        what="this router and its exporter in Consul")
    services = registered()
    assert {s["Meta"]["metrics_path"] for s in services.values()} == {"/metrics"}
    assert "paas_app" not in services["paas-router"]["Meta"]
