"""The agent's log endpoint without Docker: its query, its token, and a plain `logs` function
(one that can only tail) refusing what it cannot do."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.admin import MAX_LOG_LINES, AgentMetrics, LogQuery, admin_app
from agent.driver import ContainerMissing
from paas.listeners import InstanceLook, Listener

IID = "hello-v1-web-1a2b3c"


@pytest.mark.parametrize("query, expected", [
    ({}, LogQuery(tail=100)),
    ({"tail": "0", "follow": "1"}, LogQuery(tail=0, follow=True)),
    ({"tail": "-3"}, LogQuery(tail=0)),
    ({"tail": "99999"}, LogQuery(tail=MAX_LOG_LINES)),
    ({"since": "1714557600.25", "timestamps": "true"},
     LogQuery(since=1714557600.25, timestamps=True)),
    ({"since": "0", "follow": "false"}, LogQuery()),
])
def test_log_query(query, expected):
    assert LogQuery.parse(query) == expected


@pytest.mark.parametrize("query, named", [
    ({"tail": "ten"}, "tail"), ({"since": "-1"}, "since"), ({"since": "inf"}, "since"),
    ({"since": "yesterday"}, "since"), ({"follow": "2"}, "follow"), ({"timestamps": "x"},
                                                                      "timestamps"),
])
def test_bad_log_query(query, named):
    with pytest.raises(ValueError, match=f"^{named} "):
        LogQuery.parse(query)


@pytest.fixture
async def client():
    async def logs(iid: str, tail: int) -> str:
        if iid != IID:
            raise ContainerMissing(f"no container {iid}")
        return f"last {tail}\n"

    app = admin_app(metrics=AgentMetrics(), health=lambda: (True, {}), logs=logs, token="t0k")
    c = TestClient(TestServer(app))
    await c.start_server()
    yield c
    await c.close()


async def test_tail_needs_the_token_and_a_container(client):
    url = f"/v1/instances/{IID}/logs"
    assert (await client.get(url)).status == 401
    assert (await client.get(url, headers={"Authorization": "Bearer nope"})).status == 401
    auth = {"Authorization": "Bearer t0k"}
    resp = await client.get(url, params={"tail": "7"}, headers=auth)
    assert resp.status == 200 and await resp.text() == "last 7\n"
    resp = await client.get("/v1/instances/hello-v1-web-000000/logs", headers=auth)
    assert resp.status == 404 and "no container" in (await resp.json())["error"]
    assert (await client.get("/v1/instances/BAD/logs", headers=auth)).status == 400


@pytest.mark.parametrize("params", [{"follow": "1"}, {"since": "5"}, {"timestamps": "1"}])
async def test_a_tail_only_source_refuses_more(client, params):
    resp = await client.get(f"/v1/instances/{IID}/logs", params=params,
                            headers={"Authorization": "Bearer t0k"})
    assert resp.status == 501 and "only tail" in (await resp.json())["error"]


async def test_health_needs_the_token_and_says_what_the_node_sees():
    stopped = "hello-v1-web-5d5d5d"

    async def look(iid: str) -> InstanceLook:
        if iid == stopped:
            return InstanceLook(listening=None, check_output=None)
        if iid != IID:
            raise ContainerMissing(f"no container {iid}")
        return InstanceLook(listening=[Listener("127.0.0.1", 5000)],
                            check_output='Get "http://127.0.0.2:32768/": EOF')

    app = admin_app(metrics=AgentMetrics(), health=lambda: (True, {}), token="t0k", look=look)
    async with TestClient(TestServer(app)) as c:
        auth = {"Authorization": "Bearer t0k"}
        assert (await c.get(f"/v1/instances/{IID}/health")).status == 401
        resp = await c.get(f"/v1/instances/{IID}/health", headers=auth)
        assert (resp.status, await resp.json()) == (200, {
            "known": True, "listening": [{"address": "127.0.0.1", "port": 5000}],
            "check": 'Get "http://127.0.0.2:32768/": EOF'})
        resp = await c.get(f"/v1/instances/{stopped}/health", headers=auth)
        assert await resp.json() == {"known": False, "listening": [], "check": None}
        assert (await c.get("/v1/instances/hello-v1-web-000000/health",
                            headers=auth)).status == 404
        assert (await c.get("/v1/instances/NOT..an..id/health", headers=auth)).status == 400
