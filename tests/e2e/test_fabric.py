"""Issue 14, the attack the issue reports, on the e2e cluster: a process on a node registers
itself in that node's Consul agent under a deployed app's name, with a passing check. Before,
it got one request in three; now the router routes only what the controller placed, so it
gets none, and the router logs and counts the refusal."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import app_dir, running, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP = "victim"
REQUESTS = 300


def test_a_rogue_registration_through_a_nodes_consul_agent_gets_no_request(
        e2e, tmp_path: Path) -> None:
    hits = [0]

    class Rogue(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != "/health":
                hits[0] += 1
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"rogue")

        def log_message(self, format: str, *args: object) -> None:
            pass

    node_ip = e2e.cluster.node_ip(1)
    rogue = ThreadingHTTPServer((node_ip, 0), Rogue)
    threading.Thread(target=rogue.serve_forever, daemon=True).start()
    agent = f"http://{node_ip}:8500"

    def consul(method: str, path: str, body: object = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(agent + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.read()

    e2e.api.post("/v1/apps", {"name": APP})
    try:
        release = e2e.build(APP, app_dir(tmp_path))
        assert e2e.deploy(APP, release["version"], 1)["status"] == "succeeded"
        wait_until(lambda: e2e.served(APP) == 1, what=f"{APP} routed")
        port = rogue.server_address[1]
        consul("PUT", "/v1/agent/service/register", {
            "ID": f"{APP}-rogue", "Name": APP, "Address": node_ip, "Port": port,
            "Tags": ["live", f"v{release['version']}", "web"],
            "Check": {"HTTP": f"http://{node_ip}:{port}/health", "Interval": "1s"}})
        try:
            wait_until(lambda: any(e["Service"]["ID"] == f"{APP}-rogue" for e in e2e.consul(
                f"/v1/health/service/{APP}?passing=1")), what="the rogue passing in Consul")
            bodies: dict[str, int] = {}
            for _ in range(REQUESTS):
                status, body = e2e.get_via_router(APP)
                key = "rogue" if body == "rogue" else f"{status} app"
                bodies[key] = bodies.get(key, 0) + 1
            print(f"{REQUESTS} requests through the router: {bodies}")
            assert bodies == {"200 app": REQUESTS} and hits[0] == 0
            router_log = (e2e.cluster.root / "logs" / "router.log").read_text()
            assert f"refusing {APP} instance '{APP}-rogue' at {node_ip}:{port}" in router_log
            with urllib.request.urlopen(e2e.cluster.router_admin_url + "/metrics",  # noqa: S310
                                        timeout=5) as resp:
                metrics = resp.read().decode()
            refused = [line for line in metrics.splitlines()
                       if line.startswith("paas_router_unplaced_refused_total ")]
            assert refused and float(refused[0].split()[1]) >= 1, refused
        finally:
            consul("PUT", f"/v1/agent/service/deregister/{APP}-rogue")
    finally:
        rogue.shutdown()
        rogue.server_close()
        e2e.api.delete(f"/v1/apps/{APP}")


def test_a_consul_agent_without_the_gossip_key_cannot_join(e2e, tmp_path: Path) -> None:
    """Gossip is encrypted with the key `paas up` made (tls/gossip.key): an agent without it
    stays outside the cluster; the same agent given the key joins (the control)."""
    from paas.localcluster import find_consul

    address = f"{e2e.cluster.prefix}.9"

    def members() -> set[str]:
        return {m["Name"] for m in e2e.consul("/v1/agent/members")
                if m.get("Status") == 1}  # alive

    def agent(name: str, *extra: str) -> contextlib.AbstractContextManager[object]:
        return running([find_consul(), "agent", "-node", name, "-data-dir",
                        str(tmp_path / name), "-bind", address, "-client", address,
                        "-retry-join", e2e.cluster.server_ip, "-retry-interval", "1s",
                        "-log-level", "info", *extra], tmp_path / f"{name}.log")

    key = (e2e.cluster.root / "tls" / "gossip.key").read_text().strip()
    assert key and key not in " ".join(
        open(f"/proc/{pid}/cmdline").read() for pid in (e2e.cluster._pids()["consul-server"],))
    with agent("intruder"):
        time.sleep(8)  # several join attempts, each refused
        assert "intruder" not in members()
        log = (tmp_path / "intruder.log").read_text(errors="replace")
        assert "Join cluster failed" in log or "failed to join" in log.lower(), log[-2000:]
    with agent("keyed", "-encrypt", key):
        wait_until(lambda: "keyed" in members(), timeout=30, what="the agent with the key")
