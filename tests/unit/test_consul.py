"""The one Consul client (paas/consul.py) against a tiny fake Consul on a loopback port.

The fake answers each request with raw bytes chosen by the test, so every way Consul can fail
(an error status, no answer, a closed connection, bad or odd JSON, no index header, nothing
listening) is one row of a table, and each must come out as `ConsulUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from paas.consul import (
    Blocking,
    ConsulClient,
    ConsulUnavailable,
    HealthEntry,
    InvalidConsulUrl,
    Service,
    check_url,
    next_index,
)

HOST = "127.0.0.1"


def http(status: int, body: bytes | str = b"", *, index: int | None = 7,
         content_type: str = "application/json") -> bytes:
    raw = body.encode() if isinstance(body, str) else body
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}",
            f"Content-Length: {len(raw)}", "Connection: close"]
    if index is not None:
        head.append(f"X-Consul-Index: {index}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes


@dataclass
class FakeConsul:
    """Answers every request with `answer` (bytes, or None to hang, or b"" to close at once),
    after `delay_s`."""

    url: str = ""
    answer: bytes | None = b""
    delay_s: float = 0.0
    requests: list[Request] = field(default_factory=list)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = next((int(line.split(":", 1)[1]) for line in lines
                           if line.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            url = urlsplit(target)
            self.requests.append(Request(method, url.path, parse_qs(url.query), body))
            await asyncio.sleep(30 if self.answer is None else self.delay_s)
            writer.write(self.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.handlers.discard(task)

    async def stop(self) -> None:
        """Cut the connections still open (a hanging answer) and wait for them."""
        handlers = list(self.handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    consul = FakeConsul()
    server = await asyncio.start_server(consul.handle, HOST, 0)
    consul.url = f"http://{HOST}:{server.sockets[0].getsockname()[1]}"
    try:
        yield consul
    finally:
        server.close()
        await consul.stop()
        await server.wait_closed()


@pytest.fixture
async def client(fake: FakeConsul) -> AsyncIterator[ConsulClient]:
    async with ConsulClient(fake.url, timeout_s=0.3) as c:
        yield c


# -- every failure is ConsulUnavailable -----------------------------------------------------------

Call = Callable[[ConsulClient], Awaitable[Any]]
CALLS: dict[str, Call] = {
    "list_kv": lambda c: c.list_kv("paas/routes/"),
    "list_kv blocking": lambda c: c.list_kv("paas/routes/", index=5, wait_s=0.01),
    "health": lambda c: c.health("hello", passing=True, tag="live"),
    "agent_services": lambda c: c.agent_services(),
    "agent_check_output": lambda c: c.agent_check_output("service:hello-v1-web-aaaaaa"),
    "put_kv": lambda c: c.put_kv("paas/apps/hello/stable", "3"),
    "delete_kv": lambda c: c.delete_kv("paas/apps/hello", recurse=True),
    "register_service": lambda c: c.register_service(
        service_id="hello-v1-web-aaaaaa", name="hello", address="127.0.0.2", port=32768,
        tags=["live"], meta={}, check={"HTTP": "http://127.0.0.2:32768/", "Interval": "1s"}),
    "deregister_service": lambda c: c.deregister_service("hello-v1-web-aaaaaa"),
    "put_route": lambda c: c.put_route("hello", ["hello.localhost"]),
    "delete_route": lambda c: c.delete_route("hello"),
    "list_routes": lambda c: c.list_routes(),
    "service_health": lambda c: c.service_health("hello"),
}
READS = ("list_kv", "list_kv blocking", "health", "agent_services", "agent_check_output",
         "list_routes", "service_health")

FAILURES: dict[str, tuple[bytes | None, tuple[str, ...]]] = {
    # name: (what the fake answers, the calls it breaks)
    "500": (http(500, "rpc error: No cluster leader"), tuple(CALLS)),
    "503": (http(503, "unavailable"), tuple(CALLS)),
    "403": (http(403, "Permission denied"), tuple(CALLS)),
    "400": (http(400, "bad request"), tuple(CALLS)),
    "hangs": (None, tuple(CALLS)),
    "closes": (b"", tuple(CALLS)),
    "garbage": (b"not http at all\r\n\r\n", tuple(CALLS)),
    "bad JSON": (http(200, "{not json"), READS),
    "wrong shape": (http(200, '[{"unexpected": true}]'), READS),
    "object for a list": (http(200, '{"Key": "x"}'), READS),
    "bad base64": (http(200, '[{"Key": "paas/routes/a", "Value": "abc"}]'),
                   ("list_kv", "list_kv blocking", "list_routes")),
    "no index header": (http(200, "[]", index=None),
                        ("list_kv", "list_kv blocking", "health", "list_routes",
                         "service_health")),
    "bad index header": (http(200, "[]", index=None).replace(
        b"Connection: close", b"Connection: close\r\nX-Consul-Index: abc"),
        ("list_kv", "list_kv blocking", "health", "list_routes", "service_health")),
}
CASES = [pytest.param(answer, call, id=f"{name}-{call}")
         for name, (answer, calls) in FAILURES.items() for call in calls]


@pytest.mark.parametrize(("answer", "call"), CASES)
async def test_every_failure_is_consul_unavailable(fake: FakeConsul, client: ConsulClient,
                                                   answer: bytes | None, call: str) -> None:
    fake.answer = answer
    with pytest.raises(ConsulUnavailable) as caught:
        await asyncio.wait_for(CALLS[call](client), 5)
    assert fake.requests, "the call reached the fake"
    assert client.url in str(caught.value) or "Consul" in str(caught.value)


@pytest.mark.parametrize("call", list(CALLS))
async def test_nothing_listening_is_consul_unavailable(call: str) -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    async with ConsulClient(f"http://{HOST}:{port}", timeout_s=2) as c:
        with pytest.raises(ConsulUnavailable, match="unreachable"):
            await CALLS[call](c)


async def test_a_hang_is_cut_at_the_timeout(fake: FakeConsul, client: ConsulClient) -> None:
    fake.answer = None  # the fake hangs for 30 s: uncut, the call would outlast the deadline
    with pytest.raises(ConsulUnavailable, match="no answer to GET kv paas/routes/ within 0.3 s"):
        await asyncio.wait_for(client.list_kv("paas/routes/"), 10)


async def test_a_blocking_call_may_take_its_wait(fake: FakeConsul, client: ConsulClient) -> None:
    """wait_s + wait/16 + timeout_s: a blocking call is not cut at the plain timeout."""
    fake.answer = http(200, "[]", index=9)
    fake.delay_s = 0.5  # longer than timeout_s (0.3), shorter than wait + timeout
    assert await client.list_kv("p/", index=3, wait_s=1) == Blocking(9, {})
    with pytest.raises(ConsulUnavailable, match="within 0.3 s"):
        await client.list_kv("p/")  # not blocking: the plain timeout


# -- answers ---------------------------------------------------------------------------------------

def kv_row(key: str, value: bytes | None) -> dict[str, Any]:
    return {"Key": key, "Value": base64.b64encode(value).decode() if value is not None else None,
            "CreateIndex": 1, "ModifyIndex": 2, "Flags": 0, "LockIndex": 0}


async def test_list_kv_decodes_values_and_follows_the_index(fake: FakeConsul,
                                                            client: ConsulClient) -> None:
    fake.answer = http(200, json.dumps([kv_row("paas/routes/", None),
                                        kv_row("paas/routes/a", b'{"app": "a"}')]), index=12)
    assert await client.list_kv("paas/routes/") == Blocking(
        12, {"paas/routes/": b"", "paas/routes/a": b'{"app": "a"}'})
    first = fake.requests[-1]
    assert (first.method, first.path) == ("GET", "/v1/kv/paas/routes/")
    assert "index" not in first.query and "wait" not in first.query and "recurse" in first.query

    fake.answer = http(404, "", index=20)  # no keys under the prefix
    assert await client.list_kv("paas/routes/", index=12, wait_s=30) == Blocking(20, {})
    assert fake.requests[-1].query["index"] == ["12"]
    assert fake.requests[-1].query["wait"] == ["30s"]

    fake.answer = http(200, "[]", index=4)  # the index went backwards: start over
    assert (await client.list_kv("paas/routes/", index=20, wait_s=0.2)).index == 0
    assert fake.requests[-1].query["wait"] == ["1s"]


@pytest.mark.parametrize(("previous", "returned", "expected"), [
    (0, 10, 10), (10, 12, 12), (12, 12, 12), (12, 5, 0), (0, 0, 1),
])
def test_next_index(previous: int, returned: int, expected: int) -> None:
    assert next_index(previous, returned) == expected


def health_row(sid: str, *, address: str = "127.0.0.2", port: int = 32768,
               statuses: tuple[str, ...] = ("passing",), tags: tuple[str, ...] = ("live", "web"),
               meta: dict[str, str] | None = None) -> dict[str, Any]:
    return {"Node": {"Node": "n1", "Address": "127.0.0.9"},
            "Service": {"ID": sid, "Service": "hello", "Address": address, "Port": port,
                        "Tags": list(tags), "Meta": meta},
            "Checks": [{"CheckID": f"c{i}", "Status": s, "Output": f"check {i} is {s}"}
                       for i, s in enumerate(statuses)]}


async def test_health_aggregates_checks_and_falls_back_to_the_node_address(
        fake: FakeConsul, client: ConsulClient) -> None:
    fake.answer = http(200, json.dumps([
        health_row("a", statuses=("passing", "passing")),
        health_row("b", statuses=("passing", "warning")),
        health_row("c", statuses=("warning", "critical", "passing")),
        health_row("d", address="", statuses=(), meta={"paas_role": "live"}),
    ]), index=3)
    answer = await client.health("hello", passing=True, tag="live", index=2, wait_s=5)
    assert answer.index == 3
    assert [(e.service.id, e.status, e.service.address, e.output) for e in answer.value] == [
        ("a", "passing", "127.0.0.2", ""), ("b", "warning", "127.0.0.2", "check 1 is warning"),
        ("c", "critical", "127.0.0.2", "check 0 is warning"), ("d", "passing", "127.0.0.9", "")]
    assert answer.value[3] == HealthEntry(
        Service(id="d", name="hello", address="127.0.0.9", port=32768, tags=("live", "web"),
                meta={"paas_role": "live"}), "passing", node="n1")  # the agent's own name
    sent = fake.requests[-1]
    assert sent.path == "/v1/health/service/hello"
    assert (sent.query["passing"], sent.query["tag"], sent.query["index"]) == (
        ["1"], ["live"], ["2"])


async def test_service_health_keeps_the_controllers_shape(fake: FakeConsul,
                                                          client: ConsulClient) -> None:
    fake.answer = http(200, json.dumps([health_row("hello-v1-web-aaaaaa",
                                                   statuses=("critical",),
                                                   meta={"paas_release": "1"})]))
    assert await client.service_health("hello") == [{
        "id": "hello-v1-web-aaaaaa", "address": "127.0.0.2", "port": 32768,
        "tags": ["live", "web"], "meta": {"paas_release": "1"}, "status": "critical",
        "output": "check 0 is critical"}]
    assert "passing" not in fake.requests[-1].query and "index" not in fake.requests[-1].query


async def test_routes_are_written_listed_and_deleted(fake: FakeConsul,
                                                     client: ConsulClient) -> None:
    fake.answer = http(200, "true")
    await client.put_route("hello", ["hello.localhost"], {"redirect": True, "hsts": False})
    put = fake.requests[-1]
    assert (put.method, put.path) == ("PUT", "/v1/kv/paas/routes/hello")
    assert json.loads(put.body) == {"app": "hello", "service": "hello",
                                    "hostnames": ["hello.localhost"],
                                    "https": {"redirect": True, "hsts": False}}
    await client.delete_route("hello")
    assert (fake.requests[-1].method, fake.requests[-1].path) == (
        "DELETE", "/v1/kv/paas/routes/hello")
    await client.delete_kv("paas/apps/hello", recurse=True)
    assert "recurse" in fake.requests[-1].query
    await client.put_kv("paas/apps/hello/stable", "3")
    assert fake.requests[-1].body == b"3"

    fake.answer = http(200, json.dumps([kv_row("paas/routes/hello", b'{"app": "hello"}'),
                                        kv_row("paas/routes/junk", b"not json"),
                                        kv_row("paas/routes/", None)]))
    assert await client.list_routes() == {"hello": {"app": "hello"}}


async def test_agent_check_output_is_the_local_agents(fake: FakeConsul,
                                                      client: ConsulClient) -> None:
    fake.answer = http(200, json.dumps({"service:x-1": {
        "CheckID": "service:x-1", "Status": "critical",
        "Output": "HTTP GET http://127.0.0.2:32768/: 404 NOT FOUND Output: nope"}}))
    assert await client.agent_check_output("service:x-1") == \
        "HTTP GET http://127.0.0.2:32768/: 404 NOT FOUND Output: nope"
    assert fake.requests[-1].path == "/v1/agent/checks"
    assert await client.agent_check_output("service:x-2") is None


async def test_agent_services_and_registration(fake: FakeConsul, client: ConsulClient) -> None:
    fake.answer = http(200, json.dumps({"x-1": {
        "ID": "x-1", "Service": "x", "Address": "127.0.0.2", "Port": 32768,
        "Tags": ["live", "v1", "web"], "Meta": {"paas_node": "n1"}, "Weights": {}}}))
    assert await client.agent_services() == {"x-1": Service(
        id="x-1", name="x", address="127.0.0.2", port=32768, tags=("live", "v1", "web"),
        meta={"paas_node": "n1"})}

    fake.answer = http(200, "")
    check = {"CheckID": "service:x-1", "HTTP": "http://127.0.0.2:32768/health",
             "Interval": "1s", "Timeout": "1s", "Status": "critical",
             "DeregisterCriticalServiceAfter": "10m"}
    await client.register_service(service_id="x-1", name="x", address="127.0.0.2", port=32768,
                                  tags=("live", "v1", "web"), meta={"paas_node": "n1"},
                                  check=check)
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("PUT", "/v1/agent/service/register")
    body = {k.lower(): v for k, v in json.loads(sent.body).items()}
    assert body == {"name": "x", "id": "x-1", "address": "127.0.0.2", "port": 32768,
                    "tags": ["live", "v1", "web"], "meta": {"paas_node": "n1"},
                    "checks": [check]}

    await client.deregister_service("x-1")
    assert (fake.requests[-1].method, fake.requests[-1].path) == (
        "PUT", "/v1/agent/service/deregister/x-1")


@pytest.mark.parametrize("answer", [
    http(500, 'Unknown service ID "x-1". Ensure that the service ID is passed, not the '
              'service name.'),  # Consul 1.8
    http(404, "Unknown service"),
])
async def test_deregistering_what_is_not_registered_is_no_error(
        fake: FakeConsul, client: ConsulClient, answer: bytes) -> None:
    fake.answer = answer
    await client.deregister_service("x-1")


# -- construction and closing ----------------------------------------------------------------------

@pytest.mark.parametrize(("url", "ok"), [
    ("http://127.0.0.2:8500", "http://127.0.0.2:8500"),
    ("http://127.0.0.2:8500/", "http://127.0.0.2:8500"),
    ("https://consul.example.com", "https://consul.example.com"),
    ("http://[::1]:8500", "http://[::1]:8500"),
    ("127.0.0.2:8500", None),
    ("ftp://127.0.0.2", None),
    ("http://127.0.0.2:8500/v1", None),
    ("http://127.0.0.2:port", None),
    ("http://", None),
    ("", None),
])
def test_urls(url: str, ok: str | None) -> None:
    if ok is None:
        with pytest.raises(InvalidConsulUrl):
            check_url(url)
        with pytest.raises(ValueError):
            ConsulClient(url)
    else:
        assert check_url(url) == ok == ConsulClient(url).url


async def test_the_old_constructor_still_works_and_close_is_safe(fake: FakeConsul) -> None:
    async with aiohttp.ClientSession() as session:
        c = ConsulClient(fake.url, session)  # the controller's call today; session unused
        await c.close()  # nothing opened yet
        fake.answer = http(200, "true")
        await c.put_kv("k", "v")
        await c.close()
        await c.close()
        await c.put_kv("k", "v")  # a closed client opens a new session when used again
        await c.close()
        assert not session.closed
    assert len(fake.requests) == 2
