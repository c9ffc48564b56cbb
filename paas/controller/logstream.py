"""An app's logs, streamed from the agents of the nodes its instances run on.

`GET /v1/apps/{app}/logs` (admin token) answers `text/plain`, chunked, one line per log line of
an instance: `<instance id> | <line>`. Query:

- `instance=<id>`: only that instance (404 if it is not one of the app's current instances);
- `tail=N`: the last N lines of each instance, 0 to 10000 (default 100);
- `since=S`: only lines printed in the last S seconds (a number > 0, fractions allowed). It is
  relative on purpose: the caller's clock does not matter, only the cluster's;
- `follow=1` (or 0): after the tail, every new line as it is printed, until the caller
  disconnects. Instances that start meanwhile (a deployment, a scale, a restart elsewhere) join
  the stream with their whole log so far (bounded by 10000 lines); the instance list is read
  again every second.

Each instance's log comes from its node's agent (`<agent_url>/v1/instances/{id}/logs`, join
token), all instances at once. The agents send Docker's timestamps, which are stripped: without
follow they merge the instances' lines in time order; with follow lines come as they arrive, and
an instance's stream that ends (its container stopped, its agent restarted) is asked for again
every second from just after its last line, so no line comes twice and none is lost while a
container restarts. An instance whose log cannot be read gets one line
`<instance id> | (logs unavailable: <reason>)` instead of failing the whole stream (while
following, once per outage). Unknown app: 404; bad parameters: 400; both as JSON errors, before
any line is sent.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import re
import time
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from paas.errors import BadRequest, NotFound
from paas.names import InvalidName, validate_app_name, validate_instance_id
from paas.controller.service import CONTROLLER, Controller
from paas.controller.views import require_app

DEFAULT_TAIL = 100
MAX_TAIL = 10_000
RECHECK_S = 1.0
"""While following: how often the app's instance list is read again."""
RETRY_S = 1.0
"""While following: the pause before asking an instance's agent again after its stream ended."""
CONNECT_TIMEOUT_S = 5.0
SNAPSHOT_TIMEOUT_S = 30.0
MAX_LINE_BYTES = 64 * 1024
WRITE_BATCH = 500
STOPPING = web.AppKey("logstream_stopping", asyncio.Event)

_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


@dataclass(frozen=True)
class LogQuery:
    """The query of `GET /v1/apps/{app}/logs`, checked; `since` is a unix time here."""

    follow: bool = False
    instance: str | None = None
    since: float | None = None
    tail: int = DEFAULT_TAIL

    @classmethod
    def parse(cls, query: Mapping[str, str], *, now: float) -> LogQuery:
        """Raises BadRequest naming the parameter to fix."""
        follow = query.get("follow", "").lower()
        if follow not in ("", "0", "1", "false", "true"):
            raise BadRequest("follow must be 1 or 0")
        instance = query.get("instance") or None
        if instance is not None:
            try:
                validate_instance_id(instance)
            except InvalidName:
                raise BadRequest("instance must be an instance id such as "
                                 "hello-v3-web-1a2b3c; see 'paas ps APP'") from None
        try:
            tail = int(query.get("tail", str(DEFAULT_TAIL)))
        except ValueError:
            tail = -1
        if not 0 <= tail <= MAX_TAIL:
            raise BadRequest(f"tail must be an integer from 0 to {MAX_TAIL}")
        since = None
        if query.get("since"):
            try:
                ago = float(query["since"])
            except ValueError:
                ago = math.nan
            if not (math.isfinite(ago) and ago > 0):
                raise BadRequest("since must be a number of seconds greater than 0, "
                                 "e.g. 600 for the last 10 minutes")
            since = now - ago if now - ago > 0 else None
        return cls(follow=follow in ("1", "true"), instance=instance, since=since, tail=tail)


def split_stamp(line: str) -> tuple[float | None, str]:
    """Split Docker's `2024-05-01T10:00:00.123456789Z ` prefix off a line: (unix time, rest),
    or (None, line) when there is none."""
    m = _STAMP.match(line)
    if m is None:
        return None, line
    offset = "+00:00" if m[3] == "Z" else m[3]
    seconds = datetime.fromisoformat(m[1] + offset).timestamp()
    return seconds + int((m[2] or "0").ljust(9, "0")) / 1e9, line[m.end():]


# --- one instance's log, from its node's agent ------------------------------------------------
class LogsUnavailable(Exception):
    """An instance's log cannot be read now; the message says why in a few words."""


class NoContainer(LogsUnavailable):
    """The instance's node has no container for it: not started yet, or already removed."""


async def agent_lines(ctl: Controller, instance: Mapping[str, Any], *, follow: bool,
                      since: float | None, tail: int) -> AsyncIterator[tuple[float | None, str]]:
    """The instance's log lines as (unix time, text) from its node's agent."""
    node = ctl.store.get_node(instance["node"])
    if node is None:
        raise LogsUnavailable(f"node {instance['node']} is not registered")
    if not node["agent_url"]:
        raise LogsUnavailable(f"node {node['name']} did not register its agent's address")
    url = f"{node['agent_url']}/v1/instances/{instance['id']}/logs"
    params = {"tail": str(tail), "timestamps": "1", "follow": "1" if follow else "0"}
    if since is not None:
        params["since"] = f"{since:.6f}"
    timeout = aiohttp.ClientTimeout(total=None if follow else SNAPSHOT_TIMEOUT_S,
                                    sock_connect=CONNECT_TIMEOUT_S)
    try:
        async with ctl.session.get(url, params=params, timeout=timeout, headers={
                "Authorization": f"Bearer {ctl.tokens.join}"}) as resp:
            if resp.status == 404:
                raise NoContainer(f"node {node['name']} has no container for it")
            if resp.status != 200:
                raise LogsUnavailable(f"the agent of node {node['name']} answered "
                                      f"HTTP {resp.status}: {await _error_of(resp)}")
            async for line in _lines(resp.content):
                yield split_stamp(line)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LogsUnavailable(f"the agent of node {node['name']} at {node['agent_url']} did "
                              f"not answer ({str(exc) or type(exc).__name__})") from None


async def _error_of(resp: aiohttp.ClientResponse) -> str:
    text = (await resp.text(errors="replace"))[:300]
    try:
        return str((await resp.json(content_type=None))["error"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or "no explanation"


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Text lines of a byte stream; a line longer than MAX_LINE_BYTES comes in pieces."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield _text(line)
        while len(buffer) > MAX_LINE_BYTES:
            yield _text(buffer[:MAX_LINE_BYTES])
            buffer = buffer[MAX_LINE_BYTES:]
    if buffer:
        yield _text(buffer)


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r")


def _unavailable(instance_id: str, exc: LogsUnavailable) -> str:
    return f"{instance_id} | (logs unavailable: {exc})"


def _instances(ctl: Controller, app: str, only: str | None) -> list[dict[str, Any]] | None:
    """The app's current instances (just `only` if given); None once the app is gone."""
    if ctl.store.get_app(app) is None:
        return None
    return [i for i in ctl.store.list_instances(app) if only is None or i["id"] == only]


# --- without follow: every instance's tail, merged in time order -----------------------------
async def snapshot(ctl: Controller, instances: list[dict[str, Any]], q: LogQuery) -> list[str]:
    """The output lines: first one per instance whose log is unavailable, then the others'
    lines merged by their timestamps."""

    async def one(instance: dict[str, Any]) -> tuple[list[str], list[tuple[float, str, str]]]:
        stamped: list[tuple[float, str, str]] = []
        at = 0.0
        try:
            async with aclosing(agent_lines(ctl, instance, follow=False, since=q.since,
                                            tail=q.tail)) as lines:
                async for ts, text in lines:
                    at = ts if ts is not None else at  # unstamped: sorts with the one before
                    stamped.append((at, instance["id"], text))
        except LogsUnavailable as exc:
            return [_unavailable(instance["id"], exc)], stamped
        return [], stamped

    results = await asyncio.gather(*(one(i) for i in instances))
    notes = [note for notes, _ in results for note in notes]
    merged = heapq.merge(*(stamped for _, stamped in results), key=lambda s: s[0])
    return notes + [f"{iid} | {text}" for _, iid, text in merged]


# --- with follow ------------------------------------------------------------------------------
async def follow_instance(ctl: Controller, instance_id: str, out: asyncio.Queue[str], *,
                          since: float | None, tail: int) -> None:
    """Put the instance's lines on `out` until it is gone, asking its agent again after a
    stream ends or fails: from just after the last line seen, or, if none was, from when the
    last stream opened (by this clock); a container that did not exist yet is news whole."""
    last: float | None = None
    announced = False
    while True:
        instance = ctl.store.get_instance(instance_id)
        if instance is None or instance["desired"] == "stopped":
            return
        opened = time.time()
        try:
            # aclosing: a cancelled follow closes its agent connection now, not at collection.
            async with aclosing(agent_lines(ctl, instance, follow=True,
                                            since=since if last is None else last + 1e-6,
                                            tail=tail if last is None else MAX_TAIL)) as lines:
                async for ts, text in lines:
                    last = ts if ts is not None else last
                    announced = False
                    await out.put(f"{instance_id} | {text}")
            if last is None:
                since, tail = max(since or 0.0, opened), MAX_TAIL
        except NoContainer:
            tail = MAX_TAIL  # not started yet, or being replaced: its node will have it soon
        except LogsUnavailable as exc:
            if not announced:
                await out.put(_unavailable(instance_id, exc))
                announced = True
        await asyncio.sleep(RETRY_S)


async def _follow(request: web.Request, resp: web.StreamResponse, ctl: Controller, app: str,
                  q: LogQuery) -> None:
    out: asyncio.Queue[str] = asyncio.Queue(maxsize=4 * WRITE_BATCH)
    tasks: dict[str, asyncio.Task[None]] = {}
    loop = asyncio.get_running_loop()
    tail = q.tail
    try:
        while not _caller_gone(request):
            current = _instances(ctl, app, q.instance)
            if current is None:
                return  # the app was deleted
            for instance in current:
                if instance["id"] not in tasks:
                    tasks[instance["id"]] = asyncio.create_task(follow_instance(
                        ctl, instance["id"], out, since=q.since, tail=tail))
            tail = MAX_TAIL  # instances that appear later are new: their whole log is news
            if q.instance and all(t.done() for t in tasks.values()):
                await _write(resp, _drain(out))
                return  # the one instance asked for is gone
            recheck = loop.time() + RECHECK_S
            while (left := recheck - loop.time()) > 0 and not _caller_gone(request):
                await _write(resp, await _take(out, timeout=left))
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def _take(queue: asyncio.Queue[str], *, timeout: float) -> list[str]:
    """The lines waiting (up to WRITE_BATCH), waiting up to `timeout` for the first."""
    try:
        first = await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        return []
    return [first, *_drain(queue, WRITE_BATCH - 1)]


def _drain(queue: asyncio.Queue[str], limit: int = MAX_TAIL) -> list[str]:
    lines = []
    while len(lines) < limit and not queue.empty():
        lines.append(queue.get_nowait())
    return lines


async def _write(resp: web.StreamResponse, lines: list[str]) -> None:
    if lines:
        await resp.write("".join(f"{line}\n" for line in lines).encode())


def _caller_gone(request: web.Request) -> bool:
    """aiohttp does not cancel a handler whose client went away: a follow must look."""
    transport = request.transport
    return transport is None or transport.is_closing() or request.app[STOPPING].is_set()


# --- the route --------------------------------------------------------------------------------
async def app_logs(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROLLER]
    app = validate_app_name(request.match_info["app"])
    require_app(ctl.store, app)
    q = LogQuery.parse(request.query, now=time.time())
    instances = _instances(ctl, app, q.instance) or []
    if q.instance and not instances:
        raise NotFound(f"instance {q.instance} is not one of {app}'s instances; "
                       f"list them with 'paas ps {app}'")
    lines = [] if q.follow else await snapshot(ctl, instances, q)
    resp = web.StreamResponse(headers={"Cache-Control": "no-store"})
    resp.content_type = "text/plain"
    resp.charset = "utf-8"
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        if q.follow:
            await _follow(request, resp, ctl, app, q)
        for start in range(0, len(lines), WRITE_BATCH):
            await _write(resp, lines[start:start + WRITE_BATCH])
        if request.transport is not None and not request.transport.is_closing():
            await resp.write_eof()
    except ConnectionError:
        pass  # the caller went away
    return resp


async def _stopping(app: web.Application) -> None:
    app[STOPPING].set()  # ends every follow, so that shutting down never waits on one


def add_routes(app: web.Application) -> None:
    """Register `GET /v1/apps/{app}/logs` on the controller application."""
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stopping)
    app.router.add_get("/v1/apps/{app}/logs", app_logs, name="app_logs")
