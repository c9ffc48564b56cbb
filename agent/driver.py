"""The narrow Docker driver: start, inspect, recover, stop, remove, logs and listening sockets of
instance containers.

The contract follows Nomad's task drivers: the agent never talks to Docker except through these
calls, and `recover` finds every container of this node by its labels, running or not, so a
restarted agent re-adopts its instances without restarting them. docker-py is synchronous, so each
call runs in a worker thread (`asyncio.to_thread`). Docker errors are mapped to the small typed
set below, named by what the caller should do.

Containers run with restart policy `no` (the agent restarts them with its own backoff), the
json-file log driver, and the instance's port published on the node address only, on a host port
Docker picks.

Logs are read through `ContainerLog`: awaited, it is the text of the last lines; followed, Docker's
blocking stream is read in a thread of its own and handed to the event loop through a bounded
queue, and leaving the follow closes Docker's response, which ends that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Generator, Mapping, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import CancellableStream, LogConfig

from agent import sockets
from agent.assignments import (
    LABEL_CLUSTER,
    LABEL_INSTANCE,
    LABEL_NODE,
    Assignment,
    container_env,
    container_labels,
    container_name,
)
from agent.usage import InstanceUsage, usage_from_stats

T = TypeVar("T")
log = logging.getLogger("agent.driver")
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = "3"


class DriverError(Exception):
    """Base of the driver's errors."""


class DockerUnavailable(DriverError):
    """The Docker engine cannot be reached: retry later."""


def _seconds_between(started: str | None, finished: str | None) -> float | None:
    """Seconds between two of Docker's timestamps (RFC 3339 with nanoseconds), or None."""
    if not started or not finished:
        return None
    try:
        a, b = (datetime.fromisoformat(_to_micros(t)) for t in (started, finished))
    except ValueError:
        return None
    seconds = (b - a).total_seconds()
    return round(seconds, 3) if seconds >= 0 else None


def _to_micros(stamp: str) -> str:
    """'2026-12-07T21:20:01.123456789Z' -> '2026-12-07T21:20:01.123456+00:00'."""
    head, dot, frac = stamp.rstrip("Z").partition(".")
    return head + (dot + frac[:6] if dot else "") + "+00:00"


class ImageMissing(DriverError):
    """The instance's image is not on this engine and cannot be pulled: publish it first."""


class ContainerMissing(DriverError):
    """No container for this instance: treat it as gone."""


class ContainerConflict(DriverError):
    """A container with the instance's name exists and does not belong to this node."""


class DockerFailure(DriverError):
    """Docker refused the request for another reason; the message is Docker's explanation."""


@dataclass(frozen=True)
class ContainerInfo:
    """What the agent knows of one instance container, from `docker inspect`."""

    instance_id: str
    container_id: str
    state: str
    """Docker's state: created, running, paused, restarting, removing, exited or dead."""
    host_port: int | None = None
    exit_code: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_timeout_s: float | None = None
    started_at: str = ""
    ran_s: float | None = None
    """How long it ran before it stopped (a stopped container only)."""

    @property
    def running(self) -> bool:
        return self.state == "running"


class DockerDriver:
    """Runs instance containers for one node of one cluster on one Docker engine."""

    def __init__(self, *, base_url: str, cluster: str, node: str, address: str,
                 init: bool = True, timeout_s: float = 30.0) -> None:
        self.base_url = base_url
        self.cluster = cluster
        self.node = node
        self.address = address
        self.init = init
        self.timeout_s = timeout_s
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()
        self.pulls: dict[str, float] = {}
        """Seconds each instance's start spent pulling its image (absent: no pull)."""

    # -- the contract -------------------------------------------------------------------------

    async def start(self, spec: Assignment) -> ContainerInfo:
        """Create and start the instance's container; start an existing stopped one instead
        (same container id, its log continues), or replace it if it cannot be started again.

        Idempotent: if this node's container for the instance already runs, it is returned as is.
        """
        return await self._call(self._start_sync, spec)

    async def inspect(self, instance_id: str) -> ContainerInfo:
        """The instance's container; ContainerMissing if there is none."""
        return await self._call(self._inspect_sync, container_name(self.cluster, instance_id))

    async def recover(self) -> list[ContainerInfo]:
        """Every container labelled with this cluster and node, running or not."""
        return await self._call(self._recover_sync)

    async def stop(self, instance_id: str, *, timeout_s: float) -> None:
        """SIGTERM the container, SIGKILL after `timeout_s`, and wait; no error if already gone."""
        await self._call(self._stop_sync, container_name(self.cluster, instance_id), timeout_s)

    async def remove(self, instance_id: str) -> None:
        """Remove the container (forcefully, with its anonymous volumes); no error if gone."""
        await self._call(self._remove_sync, container_name(self.cluster, instance_id))

    def logs(self, instance_id: str, *, tail: int = 100) -> ContainerLog:
        """The container's stdout and stderr: `await driver.logs(id)` is the text of the last
        `tail` lines; the returned `ContainerLog` also reads with `since` and follows."""
        return ContainerLog(self, container_name(self.cluster, instance_id), tail=tail)

    async def listening(self, instance_id: str) -> list[sockets.Listener] | None:
        """What the instance's container listens on (`agent.sockets`); None when it is not
        running or cannot be looked into (an engine on another machine: its process ids are
        not this machine's). ContainerMissing if there is no container."""
        return await self._call(self._listening_sync, container_name(self.cluster, instance_id))

    async def usage(self) -> list[InstanceUsage]:
        """CPU and memory of every running instance container of this node (`agent.usage`)."""
        return await self._call(self._usage_sync)

    def _usage_sync(self) -> list[InstanceUsage]:
        api = self._client()
        found = []
        for summary in api.containers(filters={
                "label": [f"{LABEL_CLUSTER}={self.cluster}", f"{LABEL_NODE}={self.node}"]}):
            try:
                stats = api.stats(summary["Id"], stream=False, one_shot=True)
            except docker.errors.NotFound:
                continue  # stopped between the list and the stats
            usage = usage_from_stats(summary.get("Labels") or {}, stats)
            if usage is not None:
                found.append(usage)
        return found

    def close(self) -> None:
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None

    # -- building the container ----------------------------------------------------------------

    def create_args(self, spec: Assignment) -> dict[str, Any]:
        """The keyword arguments of `APIClient.create_container` for an assignment."""
        api = self._client()
        port_key = f"{spec.port}/tcp"
        host_config = api.create_host_config(
            port_bindings={port_key: (self.address, None)},
            mem_limit=f"{spec.memory_mb}m" if spec.memory_mb else None,
            # A soft weight, as Nomad does: reservations never throttle a node's idle cores.
            cpu_shares=max(2, int(spec.cpu * 1024)) if spec.cpu else None,
            restart_policy={"Name": "no"},
            log_config=LogConfig(type="json-file",
                                 config={"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES}),
            init=self.init or None,
        )
        return {
            "image": spec.image,
            "command": list(spec.command) if spec.command else None,
            "name": container_name(self.cluster, spec.id),
            "environment": container_env(spec),
            "labels": container_labels(spec, cluster=self.cluster, node=self.node),
            "ports": [(spec.port, "tcp")],
            "host_config": host_config,
            "stop_timeout": max(1, int(round(spec.stop_timeout_s))),
            "detach": True,
        }

    # -- synchronous bodies, run in worker threads ----------------------------------------------

    def _start_sync(self, spec: Assignment) -> ContainerInfo:
        api = self._client()
        name = container_name(self.cluster, spec.id)
        try:
            existing = self._inspect_sync(name)
        except ContainerMissing:
            existing = None
        if existing is not None:
            if existing.labels.get(LABEL_NODE) != self.node or \
                    existing.labels.get(LABEL_CLUSTER) != self.cluster:
                raise ContainerConflict(f"container {name} belongs to another node")
            if existing.running:
                return existing
            if existing.state != "dead":
                try:
                    api.start(existing.container_id)
                    return self._inspect_sync(existing.container_id)
                except docker.errors.APIError:
                    pass  # cannot be started again: replace it with a fresh container
            api.remove_container(existing.container_id, force=True)
        try:
            created = api.create_container(**self.create_args(spec))
        except docker.errors.ImageNotFound:
            if not from_registry(spec.image):
                raise ImageMissing(f"image {spec.image} is not on this node's Docker engine "
                                   "and names no registry to pull it from") from None
            repo, _, tag = spec.image.rpartition(":")
            if "/" in tag:
                repo, tag = spec.image, "latest"
            began = time.monotonic()
            try:
                api.pull(repo, tag=tag)
            except docker.errors.APIError as exc:
                raise ImageMissing(f"image {spec.image} could not be pulled: "
                                   f"{exc.explanation or exc}") from None
            self.pulls[spec.id] = time.monotonic() - began
            created = api.create_container(**self.create_args(spec))
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ContainerConflict(f"container {name} exists already") from None
            raise
        try:
            api.start(created["Id"])
        except docker.errors.APIError:
            # Leave nothing half-made: a created-but-unstartable container would block the name.
            api.remove_container(created["Id"], force=True)
            raise
        return self._inspect_sync(created["Id"])

    def _inspect_sync(self, ref: str) -> ContainerInfo:
        try:
            attrs = self._client().inspect_container(ref)
        except docker.errors.NotFound:
            raise ContainerMissing(f"no container {ref}") from None
        return self._info(attrs)

    def _listening_sync(self, ref: str) -> list[sockets.Listener] | None:
        if not self.base_url.startswith(("unix:", "http+unix:")):
            return None
        try:
            attrs = self._client().inspect_container(ref)
        except docker.errors.NotFound:
            raise ContainerMissing(f"no container {ref}") from None
        state = attrs.get("State") or {}
        pid = state.get("Pid") or 0
        if not state.get("Running") or not pid:
            return []  # a stopped container listens on nothing
        try:
            return sockets.listeners(int(pid))
        except OSError:
            return []  # it exited since the inspect

    def _recover_sync(self) -> list[ContainerInfo]:
        api = self._client()
        summaries = api.containers(all=True, filters={
            "label": [f"{LABEL_CLUSTER}={self.cluster}", f"{LABEL_NODE}={self.node}"]})
        found = []
        for summary in summaries:
            try:
                found.append(self._inspect_sync(summary["Id"]))
            except ContainerMissing:
                continue  # removed between the list and the inspect
        return sorted(found, key=lambda c: c.instance_id)

    def _stop_sync(self, ref: str, timeout_s: float) -> None:
        api = self._client()
        try:
            api.stop(ref, timeout=max(0, int(round(timeout_s))))
            api.wait(ref, timeout=self.timeout_s)
        except docker.errors.NotFound:
            return

    def _remove_sync(self, ref: str) -> None:
        try:
            self._client().remove_container(ref, v=True, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc):
                return
            raise

    def _logs_sync(self, ref: str, tail: int, since: float | None, timestamps: bool) -> str:
        try:
            raw = self._client().logs(ref, stdout=True, stderr=True, tail=tail,
                                      since=since or None, timestamps=timestamps)
        except docker.errors.NotFound:
            raise ContainerMissing(f"no container {ref}") from None
        return raw.decode("utf-8", errors="replace")

    def _log_stream_sync(self, ref: str, tail: int, since: float | None,
                         timestamps: bool) -> CancellableStream:
        try:
            return self._client().logs(ref, stdout=True, stderr=True, stream=True, follow=True,
                                       tail=tail, since=since or None, timestamps=timestamps)
        except docker.errors.NotFound:
            raise ContainerMissing(f"no container {ref}") from None

    def _info(self, attrs: Mapping[str, Any]) -> ContainerInfo:
        config = attrs.get("Config") or {}
        labels = dict(config.get("Labels") or {})
        state = attrs.get("State") or {}
        status = state.get("Status") or "unknown"
        exit_code = state.get("ExitCode") if status in ("exited", "dead") else None
        stop_timeout = config.get("StopTimeout")
        return ContainerInfo(
            instance_id=labels.get(LABEL_INSTANCE, ""),
            container_id=attrs["Id"],
            state=status,
            host_port=self._host_port(attrs),
            exit_code=exit_code,
            labels=labels,
            stop_timeout_s=float(stop_timeout) if stop_timeout is not None else None,
            started_at=state.get("StartedAt") or "",
            ran_s=(_seconds_between(state.get("StartedAt"), state.get("FinishedAt"))
                   if status in ("exited", "dead") else None),
        )

    def _host_port(self, attrs: Mapping[str, Any]) -> int | None:
        ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
        for bindings in ports.values():
            for binding in bindings or ():
                if binding.get("HostIp") == self.address and binding.get("HostPort"):
                    return int(binding["HostPort"])
        return None

    # -- plumbing -------------------------------------------------------------------------------

    def _client(self) -> docker.APIClient:
        with self._lock:
            if self._api is None:
                try:
                    self._api = docker.APIClient(base_url=self.base_url, version="auto",
                                                 timeout=int(self.timeout_s))
                except docker.errors.DockerException as exc:
                    raise DockerUnavailable(f"Docker engine at {self.base_url}: {exc}") from None
            return self._api

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(_mapped, fn, *args)


def from_registry(image: str) -> bool:
    """Whether an image reference names a registry host (`127.0.0.1:5000/paas/app:v3`)."""
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _mapped(fn: Callable[..., T], *args: Any) -> T:
    """Run a docker-py call, translating its exceptions into the driver's error set."""
    try:
        return fn(*args)
    except DriverError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise ImageMissing(str(exc.explanation or exc)) from None
    except docker.errors.NotFound as exc:
        raise ContainerMissing(str(exc.explanation or exc)) from None
    except docker.errors.APIError as exc:
        if exc.status_code is not None and exc.status_code >= 500 and \
                "connect" in str(exc.explanation or "").lower():
            raise DockerUnavailable(str(exc.explanation or exc)) from None
        raise DockerFailure(str(exc.explanation or exc)) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            ConnectionError, FileNotFoundError) as exc:
        raise DockerUnavailable(f"Docker engine unreachable: {exc}") from None
    except docker.errors.DockerException as exc:
        raise DockerFailure(str(exc)) from None


class ContainerLog:
    """One container's log, asked for like an aiohttp request: `await log` is the text of the
    last `tail` lines; `read()` adds `since` and Docker's timestamps; `follow()` streams it."""

    def __init__(self, driver: DockerDriver, ref: str, *, tail: int) -> None:
        self.driver = driver
        self.ref = ref
        self.tail = tail

    def __await__(self) -> Generator[Any, None, str]:
        return self.read().__await__()

    async def read(self, *, since: float | None = None, timestamps: bool = False) -> str:
        """The last `tail` lines printed at or after the unix time `since` (None: all)."""
        return await self.driver._call(self.driver._logs_sync, self.ref, self.tail, since,
                                       timestamps)

    def follow(self, *, since: float | None = None, timestamps: bool = False) -> LogFollower:
        """The last `tail` lines (at or after `since`), then every line as it is printed, until
        the container stops; use it as `async with ... as follower`."""
        return LogFollower(self, since=since, timestamps=timestamps)


_END = object()


class LogFollower:
    """A followed container log: `open()` starts Docker's stream (ContainerMissing if there is
    no container) and a reader thread; `get()` returns its chunks; `close()` ends both.

    The thread is a thread of its own rather than one of the shared executor's: a follow lasts as
    long as its reader, and a few of them must not starve the driver's other calls. The queue is
    bounded, so a slow reader slows the thread, not the agent's memory.
    """

    HAND_OVER_POLL_S = 0.2

    def __init__(self, log: ContainerLog, *, since: float | None, timestamps: bool,
                 queue_size: int = 256) -> None:
        self.log = log
        self.since = since
        self.timestamps = timestamps
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        self._stopped = threading.Event()
        self._stream: CancellableStream | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended = False

    async def open(self) -> None:
        d = self.log.driver
        self._stream = await d._call(d._log_stream_sync, self.log.ref, self.log.tail,
                                     self.since, self.timestamps)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._pump, name=f"paas-logs-{self.log.ref}",
                                        daemon=True)
        self._thread.start()

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next chunk (whole lines, as Docker framed them), or None once the stream ended
        (the container stopped); TimeoutError if nothing came within `timeout` seconds."""
        if self._ended:
            return None
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if item is _END:
            self._ended = True
            return None
        return item

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.get()) is not None:
            yield chunk

    async def close(self, *, join_timeout_s: float = 5.0) -> None:
        """Close Docker's response, which wakes the thread's blocking read, and wait for the
        thread to end (polled, so the event loop is never blocked)."""
        self._stopped.set()
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception as exc:  # noqa: BLE001 - closing must not fail the caller
                log.warning("could not close the log stream of %s: %s", self.log.ref, exc)
        deadline = time.monotonic() + join_timeout_s
        while self._thread is not None and self._thread.is_alive() \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._thread is not None and self._thread.is_alive():
            log.warning("the log reader of %s did not end within %gs", self.log.ref,
                        join_timeout_s)

    async def __aenter__(self) -> LogFollower:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the reader thread ----------------------------------------------------------------------

    def _pump(self) -> None:
        assert self._stream is not None
        try:
            for chunk in self._stream:
                if not self._hand_over(chunk):
                    return
        except Exception as exc:  # noqa: BLE001 - a broken stream simply ends the follow
            if not self._stopped.is_set():
                log.info("log stream of %s ended: %s", self.log.ref, exc)
        finally:
            if not self._stopped.is_set():
                self._hand_over(_END)

    def _hand_over(self, item: Any) -> bool:
        """Put `item` on the queue from this thread, waiting while it is full; False once the
        follow was closed (or the loop is gone)."""
        assert self._loop is not None
        try:
            fut = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        except RuntimeError:  # the event loop is closed
            return False
        while True:
            try:
                fut.result(timeout=self.HAND_OVER_POLL_S)
                return True
            except concurrent.futures.TimeoutError:
                if self._stopped.is_set():
                    fut.cancel()
                    return False
            except concurrent.futures.CancelledError:
                return False
