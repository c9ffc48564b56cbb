"""`GET /v1/apps/{app}/logs` in-process: parameter checks, and the merge, follow, pick-up of new
instances, resume and disconnect behaviour against fake node agents (aiohttp servers on
127.0.0.1 that speak the agent's log endpoint, timestamps included)."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from paas.controller.logstream import LogQuery, split_stamp
from paas.controller.service import CONTROLLER
from tests.waiting import wait_until_async


def stamp(t: float) -> str:
    whole = int(t)
    return (datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            + f".{round((t - whole) * 1e9):09d}Z")


class FakeAgent:
    """An agent's `/v1/instances/{id}/logs`: lines are (unix time, text) per instance."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.lines: dict[str, list[tuple[float, str]]] = {}
        self.queries: list[dict[str, str]] = []
        self.follows = 0
        self.end_follows = False

    def print(self, instance_id: str, text: str, at: float | None = None) -> None:
        self.lines.setdefault(instance_id, []).append((time.time() if at is None else at, text))

    def _select(self, iid: str, since: float, tail: int) -> list[tuple[float, str]]:
        chosen = [(t, text) for t, text in self.lines[iid] if t >= since]
        return chosen[-tail:] if tail else []

    async def logs(self, request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == f"Bearer {self.token}"
        q = dict(request.query)
        self.queries.append({"id": request.match_info["id"], **q})
        iid = request.match_info["id"]
        if iid not in self.lines:
            return web.json_response({"error": f"no container for {iid} on this node"},
                                     status=404)
        assert q["timestamps"] == "1"
        sent = self._select(iid, float(q.get("since", 0)), int(q["tail"]))
        body = "".join(f"{stamp(t)} {text}\n" for t, text in sent)
        if q.get("follow") != "1":
            return web.Response(text=body, content_type="text/plain")
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        # Counted once it has chosen where new lines start: a line printed after a test saw the
        # count go up is sent.
        last = sent[-1][0] if sent else time.time() - 1e-3
        self.follows += 1
        try:
            await resp.write(body.encode())
            while request.transport is not None and not request.transport.is_closing():
                if self.end_follows:
                    return resp
                new = [(t, text) for t, text in self.lines[iid] if t > last]
                for t, text in new:
                    await resp.write(f"{stamp(t)} {text}\n".encode())
                    last = t
                await asyncio.sleep(0.02)  # the fake's own poll for new lines
        finally:
            self.follows -= 1
        return resp


@pytest.fixture
async def agent(settings: Any, api: Any, join: dict[str, str]) -> AsyncIterator[FakeAgent]:
    fake = FakeAgent(join["Authorization"].removeprefix("Bearer "))
    app = web.Application()
    app.router.add_get("/v1/instances/{id}/logs", fake.logs)

    async def stop_follows(_: web.Application) -> None:
        fake.end_follows = True

    app.on_shutdown.append(stop_follows)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    for node, agent_url in (("n1", url), ("gone", "http://127.0.0.1:1")):
        resp = await api.put(f"/v1/nodes/{node}", headers=join,
                             json={"address": "127.0.0.2", "agent_url": agent_url})
        assert resp.status == 200
    yield fake
    await server.close()


def add_instance(api: Any, app: str, *, node: str = "n1") -> str:
    iid = f"{app}-v1-web-{secrets.token_hex(3)}"
    api.server.app[CONTROLLER].store.add_instances([{
        "id": iid, "app": app, "release": 1, "process": "web", "role": "live", "node": node}])
    return iid


async def create(api: Any, admin: dict[str, str], name: str = "talk") -> str:
    assert (await api.post("/v1/apps", json={"name": name}, headers=admin)).status == 201
    return name


async def error_of(resp: Any, status: int) -> str:
    assert resp.status == status, await resp.text()
    return (await resp.json())["error"]


# --- parameters -------------------------------------------------------------------------------
async def test_unknown_app_and_unknown_instance_are_404(api, admin):
    assert "does not exist" in await error_of(await api.get("/v1/apps/nope/logs", headers=admin),
                                              404)
    await create(api, admin)
    await create(api, admin, "other")
    elsewhere = add_instance(api, "other")
    for iid in ("talk-v1-web-abcdef", elsewhere):
        msg = await error_of(await api.get("/v1/apps/talk/logs", params={"instance": iid},
                                           headers=admin), 404)
        assert iid in msg and "paas ps talk" in msg


@pytest.mark.parametrize("params, named", [
    ({"tail": "-1"}, "tail"), ({"tail": "x"}, "tail"), ({"tail": "10001"}, "tail"),
    ({"since": "0"}, "since"), ({"since": "-5"}, "since"), ({"since": "10m"}, "since"),
    ({"since": "nan"}, "since"), ({"since": "inf"}, "since"), ({"follow": "maybe"}, "follow"),
    ({"instance": "not an id"}, "instance"),
])
async def test_bad_parameters_are_400(api, admin, params, named):
    await create(api, admin)
    msg = await error_of(await api.get("/v1/apps/talk/logs", params=params, headers=admin), 400)
    assert msg.startswith(named)


async def test_the_join_token_cannot_read_logs(api, admin, join):
    await create(api, admin)
    await error_of(await api.get("/v1/apps/talk/logs", headers=join), 403)


def test_since_is_seconds_ago_and_tail_is_bounded():
    q = LogQuery.parse({"since": "600", "tail": "0", "follow": "1"}, now=10_000.0)
    assert (q.since, q.tail, q.follow, q.instance) == (9_400.0, 0, True, None)
    assert LogQuery.parse({}, now=1.0) == LogQuery(follow=False, instance=None, since=None,
                                                   tail=100)
    assert LogQuery.parse({"since": "5"}, now=1.0).since is None  # before the epoch: everything


def test_docker_timestamps_are_split_off():
    assert split_stamp("2024-05-01T10:00:00.123456789Z hello | world") == (
        pytest.approx(1714557600.123456789), "hello | world")
    assert split_stamp("2024-05-01T12:00:00+02:00 x") == (1714557600.0, "x")
    assert split_stamp("no stamp here") == (None, "no stamp here")


# --- against fake agents ----------------------------------------------------------------------
async def test_an_app_without_instances_has_an_empty_log(api, admin, agent):
    await create(api, admin)
    resp = await api.get("/v1/apps/talk/logs", headers=admin)
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert await resp.text() == ""


async def test_lines_of_every_instance_merged_in_time_order(api, admin, agent):
    await create(api, admin)
    a, b = add_instance(api, "talk"), add_instance(api, "talk")
    lost = add_instance(api, "talk", node="gone")
    t = time.time() - 10
    agent.print(a, "a1", t)
    agent.print(b, "b1 | with a bar", t + 1)
    agent.print(a, "a2", t + 2)
    agent.print(b, "b2", t + 3)
    resp = await api.get("/v1/apps/talk/logs", headers=admin)
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    assert lines[0].startswith(f"{lost} | (logs unavailable: the agent of node gone at "
                               "http://127.0.0.1:1 did not answer")
    assert lines[1:] == [f"{a} | a1", f"{b} | b1 | with a bar", f"{a} | a2", f"{b} | b2"]

    before = time.time()
    resp = await api.get("/v1/apps/talk/logs", params={"instance": a, "tail": "1", "since": "9"},
                         headers=admin)
    assert (await resp.text()).splitlines() == [f"{a} | a2"]
    after = time.time()
    sent = agent.queries[-1]
    assert (sent["id"], sent["tail"], sent["follow"]) == (a, "1", "0")
    assert before - 9 - 1e-3 <= float(sent["since"]) <= after - 9 + 1e-3, "9 s before the ask"


async def test_follow_streams_picks_up_new_instances_resumes_and_stops(api, admin, agent):
    await create(api, admin)
    first = add_instance(api, "talk")
    pending = add_instance(api, "talk")  # no container yet: silent until it has one
    agent.print(first, "old", time.time() - 5)
    resp = await api.get("/v1/apps/talk/logs", params={"follow": "1", "tail": "0"},
                         headers=admin)
    assert resp.status == 200 and resp.content_type == "text/plain"

    async def line() -> str:
        return (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")

    await wait_until_async(lambda: agent.follows == 1, 10, 0.02,
                           what="the controller to follow the instance that has a container")
    agent.print(first, "new")
    assert await line() == f"{first} | new"  # tail=0: only new lines

    agent.print(pending, "started at last")
    assert await line() == f"{pending} | started at last"

    later = add_instance(api, "talk")  # a new deployment's instance, seen within a second
    agent.print(later, "hello from the new release", time.time() - 30)
    assert await line() == f"{later} | hello from the new release"

    agent.end_follows = True  # every agent stream ends, as when containers restart
    await wait_until_async(lambda: agent.follows == 0, 10, 0.02, what="every agent stream ended")
    agent.end_follows = False
    agent.print(first, "after the restart")
    assert await line() == f"{first} | after the restart"  # once, nothing repeated

    await wait_until_async(lambda: agent.follows == 3, 10, what="every instance followed again")
    resp.close()
    await wait_until_async(lambda: agent.follows == 0, 10,
                           what="the agent streams closed after the caller left")


async def test_follow_of_one_instance_ends_when_it_is_gone(api, admin, agent):
    await create(api, admin)
    iid = add_instance(api, "talk")
    other = add_instance(api, "talk")
    agent.print(iid, "mine", time.time() - 1)
    agent.print(other, "not mine", time.time() - 1)
    resp = await api.get("/v1/apps/talk/logs", params={"follow": "1", "instance": iid},
                         headers=admin)
    assert (await asyncio.wait_for(resp.content.readline(), 3)).decode() == f"{iid} | mine\n"
    api.server.app[CONTROLLER].store.set_desired([iid], "stopped")
    agent.end_follows = True  # its container stops
    assert await asyncio.wait_for(resp.content.read(), 5) == b""


async def test_an_unreachable_agent_is_one_line_while_following(api, admin, agent):
    await create(api, admin)
    lost = add_instance(api, "talk", node="gone")
    resp = await api.get("/v1/apps/talk/logs", params={"follow": "1"}, headers=admin)
    first = (await asyncio.wait_for(resp.content.readline(), 3)).decode()
    assert first.startswith(f"{lost} | (logs unavailable: ")
    with pytest.raises(asyncio.TimeoutError):  # asked again every second, announced once
        await asyncio.wait_for(resp.content.readline(), 2.5)
    resp.close()


async def test_deleting_the_app_ends_a_follow(api, admin, agent):
    await create(api, admin)
    resp = await api.get("/v1/apps/talk/logs", params={"follow": "1"}, headers=admin)
    assert resp.status == 200
    assert (await api.delete("/v1/apps/talk", headers=admin)).status == 200
    assert await asyncio.wait_for(resp.content.read(), 5) == b""


async def test_stopping_the_controller_does_not_wait_for_a_follow(api, admin, agent):
    await create(api, admin)
    iid = add_instance(api, "talk")
    agent.print(iid, "hello", time.time() - 1)
    resp = await api.get("/v1/apps/talk/logs", params={"follow": "1"}, headers=admin)
    assert (await asyncio.wait_for(resp.content.readline(), 3)).decode() == f"{iid} | hello\n"
    # Waiting on the follow would hold the close for aiohttp's shutdown timeout (60 s).
    await asyncio.wait_for(api.close(), 30)
