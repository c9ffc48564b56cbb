"""The narrow Docker driver: start, inspect, recover, stop, remove and logs of instance containers.

The contract follows Nomad's task drivers: the agent never talks to Docker except through these
calls, and `recover` finds every container of this node by its labels, running or not, so a
restarted agent re-adopts its instances without restarting them. docker-py is synchronous, so each
call runs in a worker thread (`asyncio.to_thread`). Docker errors are mapped to the small typed
set below, named by what the caller should do.

Containers run with restart policy `no` (the agent restarts them with its own backoff), the
json-file log driver, and the instance's port published on the node address only, on a host port
Docker picks.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig

from agent.assignments import (
    LABEL_CLUSTER,
    LABEL_INSTANCE,
    LABEL_NODE,
    Assignment,
    container_env,
    container_labels,
    container_name,
)

T = TypeVar("T")
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = "3"


class DriverError(Exception):
    """Base of the driver's errors."""


class DockerUnavailable(DriverError):
    """The Docker engine cannot be reached: retry later."""


class ImageMissing(DriverError):
    """The instance's image is not on this engine: publish it first (the agent never pulls)."""


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

    async def logs(self, instance_id: str, *, tail: int = 100) -> str:
        """The last `tail` lines of the container's stdout and stderr."""
        return await self._call(self._logs_sync, container_name(self.cluster, instance_id), tail)

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
            raise ImageMissing(f"image {spec.image} is not on this node's Docker engine") from None
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

    def _logs_sync(self, ref: str, tail: int) -> str:
        try:
            raw = self._client().logs(ref, stdout=True, stderr=True, tail=tail)
        except docker.errors.NotFound:
            raise ContainerMissing(f"no container {ref}") from None
        return raw.decode("utf-8", errors="replace")

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
