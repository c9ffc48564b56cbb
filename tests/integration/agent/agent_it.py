"""Helpers shared by the agent's integration tests (addresses, HTTP, Consul reads); they wait
with tests.waiting."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CONSUL_ADDR = "127.0.6.1"
NODE_ADDR = "127.0.6.2"
IMAGE = "paas/busybox:latest"
HTTPD = ["/bin/sh", "-c",
         "echo ok > /www/health; echo hi > /www/index.html; exec httpd -f -p $PORT -h /www"]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def http_get(url: str, timeout: float = 2.0,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers or {}),
                          timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def consul_json(consul_url: str, path: str):
    status, body = http_get(consul_url + path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def check_status(consul_url: str, instance_id: str) -> str | None:
    """The status of the instance's service check, or None if Consul has no such check."""
    checks = consul_json(consul_url, "/v1/agent/checks")
    check = checks.get(f"service:{instance_id}")
    return check["Status"] if check else None
