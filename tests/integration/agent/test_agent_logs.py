"""The agent's log endpoint on a real Docker engine: tail, since, follow line by line, and a follow
that ends (its Docker stream closed, its reader thread gone) when the caller disconnects or the
container stops. The admin server runs in-process on the node address 127.0.6.2."""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from typing import AsyncIterator

import aiohttp
import docker
import pytest

from agent.admin import AgentMetrics, admin_app, serve_admin
from agent.assignments import Assignment, HealthCheck
from agent.driver import DockerDriver
from agent_it import IMAGE, NODE_ADDR
from tests.waiting import wait_until_async

pytestmark = pytest.mark.docker

TOKEN = "join-" + secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TICKER = ("/bin/sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done")
LINE = re.compile(r"^line (\d+)$")


class Node:
    """A driver and its admin server, as the agent daemon wires them."""

    def __init__(self, driver: DockerDriver, metrics: AgentMetrics, url: str) -> None:
        self.driver, self.metrics, self.url = driver, metrics, url

    def logs_url(self, instance_id: str) -> str:
        return f"{self.url}/v1/instances/{instance_id}/logs"

    def follows(self) -> float:
        return self.metrics.registry.get_sample_value("paas_agent_log_follows") or 0.0


@pytest.fixture
async def node(run_id: str, docker_client: docker.DockerClient) -> AsyncIterator[Node]:
    driver = DockerDriver(base_url="unix:///var/run/docker.sock", cluster=run_id,
                          node="node-logs", address=NODE_ADDR)
    metrics = AgentMetrics()
    app = admin_app(metrics=metrics, health=lambda: (True, {}), token=TOKEN,
                    logs=lambda iid, tail: driver.logs(iid, tail=tail))
    runner = await serve_admin(app, host=NODE_ADDR, port=0)
    port = runner.addresses[0][1]
    try:
        yield Node(driver, metrics, f"http://{NODE_ADDR}:{port}")
    finally:
        await runner.cleanup()
        driver.close()


@pytest.fixture
async def ticker(node: Node) -> AsyncIterator[str]:
    """A running container printing `line N` every 0.2 s; yields its instance id."""
    app = "lg" + secrets.token_hex(3)
    a = Assignment(id=f"{app}-v1-web-{secrets.token_hex(3)}", app=app, release=1, process="web",
                   image=IMAGE, command=TICKER, env={}, port=5000, memory_mb=64, cpu=0.5,
                   health=HealthCheck(path="/health"), stop_timeout_s=1)
    await node.driver.start(a)
    try:
        yield a.id
    finally:
        await node.driver.remove(a.id)


def numbers(text: str) -> list[int]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, f"unexpected log line {line!r}"
        out.append(int(m[1]))
    return out


def reader_threads(instance_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(instance_id)]


async def get(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, str]:
    async with session.get(url, params=params, headers=AUTH) as resp:
        return resp.status, await resp.text()


async def test_tail_and_since(node: Node, ticker: str) -> None:
    url = node.logs_url(ticker)
    async with aiohttp.ClientSession() as session:
        async def printed(at_least: int, **params: str) -> list[int]:
            lines = numbers((await get(session, url, **params))[1])
            return lines if len(lines) >= at_least else []

        await wait_until_async(lambda: printed(8), 30, 0.2, what="8 lines from the container")

        status, text = await get(session, url, tail="3")
        assert status == 200
        last3 = numbers(text)
        assert len(last3) == 3 and last3 == list(range(last3[0], last3[0] + 3))

        status, text = await get(session, url, tail="2", timestamps="1")
        assert status == 200 and all(
            re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z line \d+$", line)
            for line in text.splitlines()), text

        mark = time.time()
        printed_before = numbers((await get(session, url, tail="1"))[1])[0]
        since = await wait_until_async(lambda: printed(2, since=f"{mark:.6f}", tail="1000"), 30,
                                       0.2, what="2 lines printed since the mark")
        assert since[0] > printed_before, (printed_before, since)
        assert since == list(range(since[0], since[0] + len(since))), since


async def test_bad_requests(node: Node, ticker: str) -> None:
    url = node.logs_url(ticker)
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.status == 401
        for params in ({"tail": "x"}, {"since": "-1"}, {"since": "soon"}, {"follow": "maybe"}):
            status, text = await get(session, url, **params)
            assert status == 400 and next(iter(params)) in text, (params, text)
        missing = node.logs_url(ticker[:-6] + "000000")
        for follow in ("0", "1"):
            status, text = await get(session, missing, follow=follow)
            assert status == 404 and "no container" in text


async def test_follow_streams_lines_and_disconnecting_ends_the_docker_stream(
        node: Node, ticker: str) -> None:
    async with aiohttp.ClientSession() as session:
        resp = await session.get(node.logs_url(ticker), params={"follow": "1", "tail": "0"},
                                 headers=AUTH)
        assert resp.status == 200 and resp.content_type == "text/plain"
        first = await asyncio.wait_for(resp.content.readline(), 20)  # how soon: bench/reactions
        second = await asyncio.wait_for(resp.content.readline(), 20)
        n1, n2 = numbers(first.decode() + second.decode())
        assert n2 == n1 + 1, "lines arrive one by one, in order"
        assert node.follows() == 1 and len(reader_threads(ticker)) == 1

        resp.close()  # the caller disconnects mid-stream
        await wait_until_async(lambda: not reader_threads(ticker) and node.follows() == 0, 20,
                               what="the follow to close Docker's stream and end its thread")


async def test_follow_ends_when_the_container_stops(node: Node, ticker: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(node.logs_url(ticker), params={"follow": "1", "tail": "2"},
                               headers=AUTH) as resp:
            assert resp.status == 200
            assert LINE.match((await asyncio.wait_for(resp.content.readline(), 20)).decode()
                              .rstrip("\n"))
            await node.driver.stop(ticker, timeout_s=1)
            rest = await asyncio.wait_for(resp.content.read(), 20)  # EOF once it stopped
            numbers(rest.decode())
    await wait_until_async(lambda: not reader_threads(ticker) and node.follows() == 0, 20,
                           what="the reader thread to end")


async def test_shutting_down_the_admin_server_ends_a_follow(node: Node, ticker: str) -> None:
    metrics = AgentMetrics()
    app = admin_app(metrics=metrics, health=lambda: (True, {}), token=TOKEN,
                    logs=lambda iid, tail: node.driver.logs(iid, tail=tail))
    runner = await serve_admin(app, host=NODE_ADDR, port=0)
    url = f"http://{NODE_ADDR}:{runner.addresses[0][1]}/v1/instances/{ticker}/logs"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params={"follow": "1"}, headers=AUTH) as resp:
            await asyncio.wait_for(resp.content.readline(), 20)
            # Waiting on the follow would hold the shutdown for aiohttp's shutdown timeout (60 s);
            # how soon it ends: bench/reactions.
            await asyncio.wait_for(runner.cleanup(), 30)
    await wait_until_async(lambda: not reader_threads(ticker), 20, what="the reader thread to end")
