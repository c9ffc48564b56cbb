"""The agent's controller client (agent/controller_client.py) against a tiny in-process server."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.controller_client import (
    ControllerClient,
    ControllerError,
    ControllerUnreachable,
    NodeUnknown,
    Unauthorized,
)

TOKEN = "join-secret"


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append({"method": request.method, "path": request.path,
                     "query": dict(request.query), "auth": request.headers.get("Authorization"),
                     "body": body})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "bad token"}, status=401)
        node = request.match_info["node"]
        if node == "ghost":
            return web.json_response({"error": "node 'ghost' is not registered"}, status=404)
        if node == "broken":
            return web.json_response({"error": "boom"}, status=500)
        if request.path.endswith("/assignments"):
            if node == "garbage":
                return web.json_response({"index": 1, "instances": [{"id": "x"}]})
            await asyncio.sleep(float(request.query["wait"]) / 10)
            return web.json_response({"index": 3, "instances": []})
        if request.path.endswith("/heartbeat"):
            return web.json_response({"ok": True})
        return web.json_response({"node": {"name": node, **body}})

    app = web.Application()
    app.router.add_route("*", "/v1/nodes/{node}", handler)
    app.router.add_route("*", "/v1/nodes/{node}/{what}", handler)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv, seen
    await srv.close()


def client(srv: TestServer, node: str = "n1", token: str = TOKEN) -> ControllerClient:
    return ControllerClient(base_url=str(srv.make_url("/")), node=node, token=token)


async def test_register_heartbeat_and_long_poll(server) -> None:
    srv, seen = server
    c = client(srv)
    try:
        node = await c.register(address="127.0.0.2", cpu=2.0, memory_mb=4096,
                                labels={"zone": "a"}, consul_url="http://127.0.0.2:8500",
                                agent_url="http://127.0.0.2:7071")
        assert node["name"] == "n1"
        await c.heartbeat([{"id": "i", "state": "running"}], index=3)
        got = await c.assignments(index=2, wait_s=1)
        assert got is not None and (got.index, got.instances) == (3, ())
    finally:
        await c.close()
    assert [(s["method"], s["path"]) for s in seen] == [
        ("PUT", "/v1/nodes/n1"), ("POST", "/v1/nodes/n1/heartbeat"),
        ("GET", "/v1/nodes/n1/assignments")]
    assert all(s["auth"] == f"Bearer {TOKEN}" for s in seen)
    assert seen[0]["body"] == {"address": "127.0.0.2", "cpu": 2.0, "memory_mb": 4096,
                               "labels": {"zone": "a"}, "consul_url": "http://127.0.0.2:8500",
                               "agent_url": "http://127.0.0.2:7071"}
    assert seen[1]["body"] == {"instances": [{"id": "i", "state": "running"}], "index": 3}
    assert seen[2]["query"] == {"index": "2", "wait": "1"}


@pytest.mark.parametrize("node, token, error", [
    ("n1", "wrong", Unauthorized),
    ("ghost", TOKEN, NodeUnknown),
    ("broken", TOKEN, ControllerUnreachable),
    ("garbage", TOKEN, ControllerError),
])
async def test_errors_are_typed(server, node: str, token: str, error: type) -> None:
    srv, _ = server
    c = client(srv, node=node, token=token)
    try:
        with pytest.raises(error):
            await c.assignments(index=0, wait_s=0)
    finally:
        await c.close()


async def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = ControllerClient(base_url=f"http://127.0.0.1:{port}", node="n1", token=TOKEN)
    try:
        with pytest.raises(ControllerUnreachable):
            await c.heartbeat([])
    finally:
        await c.close()
