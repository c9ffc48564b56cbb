"""Suite-wide rule: only a test marked `docker` may use the Docker engine, Consul or HAProxy.

`make test-quick` runs `-m "not docker"` and must pass on a machine that has none of them. So
that it stays true as tests are added, every test without the marker runs with the engine made
unreachable (`DOCKER_HOST` points nowhere) and fails, with a sentence saying to mark it, if it
connects to the local Docker socket or starts `docker`, `dockerd`, `consul` or `haproxy`.
tests/unit/test_markers.py checks this guard, and that every module under tests/integration and
tests/e2e carries the marker.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

UNREACHABLE_DOCKER = "unix:///nonexistent/docker.sock"
ENGINE_PROGRAMS = frozenset({"docker", "dockerd", "consul", "haproxy"})
DOCKER_SOCKETS = frozenset(os.path.realpath(p) for p in ("/var/run/docker.sock",
                                                          "/run/docker.sock"))
HINT = "mark the test `@pytest.mark.docker` (it then leaves `make test-quick`)"


def refuse_engine_program(args: Any) -> None:
    """Fail the test if `args` (a Popen argv or command string) starts an engine program."""
    first = args if isinstance(args, (str, bytes, os.PathLike)) else next(iter(args), "")
    name = Path(os.fsdecode(first).split()[0] if first else "").name
    if name in ENGINE_PROGRAMS:
        pytest.fail(f"a test without the `docker` marker started {name}: {HINT}")


def refuse_docker_socket(address: Any) -> None:
    """Fail the test if `address` is the local Docker engine's socket."""
    if isinstance(address, (str, bytes)) and os.path.realpath(os.fsdecode(address)) \
            in DOCKER_SOCKETS:
        pytest.fail(f"a test without the `docker` marker connected to the Docker engine: {HINT}")


class GuardedPopen(subprocess.Popen):
    """`subprocess.Popen` (and so `run` and asyncio's subprocesses) minus the engine programs."""

    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        refuse_engine_program(args)
        super().__init__(args, *rest, **kwargs)


def guarded_connect(connect: Any) -> Any:
    """`socket.socket.connect` (or `connect_ex`) that will not reach the Docker socket."""

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family == socket.AF_UNIX:
            refuse_docker_socket(address)
        return connect(self, address)

    return guarded


@pytest.fixture(autouse=True)
def engines_only_for_docker_tests(request: pytest.FixtureRequest,
                                  monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("docker") is None:
        monkeypatch.setenv("DOCKER_HOST", UNREACHABLE_DOCKER)
        monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
        for method in ("connect", "connect_ex"):
            monkeypatch.setattr(socket.socket, method,
                                guarded_connect(getattr(socket.socket, method)))
    yield
