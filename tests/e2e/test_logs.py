"""`GET /v1/apps/{app}/logs` end to end on the shared cluster: every instance's lines from its
node's agent, and a follow that shows new lines within seconds and a new deployment's instances
as they start."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from tests.e2e.conftest import app_dir, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP = "logtick"
TICKER = '( while true; do echo "tick $(date +%s)"; sleep 1; done ) &\n'


def ticking_app(tmp: Path) -> Path:
    """examples/hello whose web process also prints `tick <unix time>` every second."""
    target = app_dir(tmp)
    start = (target / "start.sh").read_text()
    assert "httpd -f -p" in start
    (target / "start.sh").write_text(start.replace("httpd -f -p", TICKER + "httpd -f -p", 1))
    return target


def logs_text(e2e, app: str, **params: str) -> str:
    url = f"{e2e.cluster.controller_url}/v1/apps/{app}/logs?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers={
        "Authorization": f"Bearer {e2e.cluster.admin_token()}"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
        assert resp.status == 200 and resp.headers.get_content_type() == "text/plain"
        return resp.read().decode()


class Follow:
    """`GET /v1/apps/{app}/logs?follow=1` read line by line in a thread."""

    def __init__(self, e2e, app: str, **params: str) -> None:
        url = urllib.parse.urlsplit(e2e.cluster.controller_url)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.conn.request("GET", f"/v1/apps/{app}/logs?"
                          + urllib.parse.urlencode({"follow": "1", **params}),
                          headers={"Authorization": f"Bearer {e2e.cluster.admin_token()}"})
        resp = self.conn.getresponse()
        assert resp.status == 200, resp.read()
        self.resp = resp
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for raw in iter(self.resp.readline, b""):
                with self.cond:
                    self.lines.append(raw.decode().rstrip("\n"))
                    self.cond.notify_all()
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed by close()

    def wait_for(self, match: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [line for line in self.lines if match(line)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching line within {timeout}s; got "
                                         f"{self.lines[-10:]}")
                self.cond.wait(left)

    def close(self) -> None:
        """Disconnect: shut the socket down (the reader sees the end), then close it."""
        if self.conn.sock is not None:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        self.conn.close()


def test_logs_show_every_instance_and_follow_new_lines_and_deployments(e2e, tmp_path):
    wait_until(lambda: len([n for n in e2e.api.get("/v1/nodes")["nodes"]
                            if n["status"] == "ready"]) == 2, what="2 ready nodes")
    e2e.api.post("/v1/apps", {"name": APP})
    try:
        source = ticking_app(tmp_path)
        v1 = e2e.build(APP, source)["version"]
        assert e2e.deploy(APP, v1, 2)["status"] == "succeeded"
        live = [i["id"] for i in e2e.api.get(f"/v1/apps/{APP}/instances")["instances"]
                if i["role"] == "live" and i["release"] == v1]
        assert len(live) == 2

        lines = logs_text(e2e, APP).splitlines()
        for iid in live:
            assert f"{iid} | hello v{v1} instance {iid} listening on port 5000" in lines, lines
        assert all(" | " in line for line in lines)
        one = logs_text(e2e, APP, instance=live[0], tail="5").splitlines()
        assert one and len(one) <= 5 and all(line.startswith(f"{live[0]} | ") for line in one)

        started = time.time()
        follow = Follow(e2e, APP, tail="0")
        try:
            # A fresh tick, waited for generously (how soon it comes: bench/reactions).
            tick = follow.wait_for(lambda line: " | tick " in line, timeout=30)
            assert tick.split(" | ")[0] in live
            assert int(tick.rsplit(" ", 1)[1]) >= int(started), "an old line, not a new one"

            v2 = e2e.build(APP, source)["version"]
            assert e2e.deploy(APP, v2, 2)["status"] == "succeeded"
            news = follow.wait_for(lambda line: f"-v{v2}-web-" in line.split(" | ")[0]
                                   and "listening on port" in line, timeout=10)
            assert f"hello v{v2} instance" in news
        finally:
            follow.close()
    finally:
        e2e.api.delete(f"/v1/apps/{APP}")
