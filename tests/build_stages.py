"""Removing what a test module's image builds left behind.

The classic builder keeps each build stage of a multi-stage Dockerfile as an untagged image: the
layer cache of a warm rebuild. A test module that builds on a stack removes, when it ends, the
untagged descendants of that stack's build image, so a run leaves no dangling images. (The
stack images themselves stay: they are the machine's cache, like `paas/busybox:latest`.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import docker
import docker.errors
import pytest

from paas.builder import stacks
from tests.engines import SETUP


def remove_build_stages(api: docker.APIClient, stack_names: Iterable[str]) -> None:
    builds = set()
    for name in stack_names:
        try:
            builds.add(api.inspect_image(stacks.get_stack(name).build_image)["Id"])
        except docker.errors.ImageNotFound:
            pass
    for image in api.images(filters={"dangling": True}, quiet=True):
        current = image
        while current and current not in builds:
            try:
                current = api.inspect_image(current).get("Parent") or ""
            except docker.errors.ImageNotFound:
                current = ""
        if current in builds:
            try:
                api.remove_image(image, force=True)
            except docker.errors.APIError:
                pass  # another build still uses it


@contextmanager
def engine_for_run(run: str, stack_names: Iterable[str]) -> Iterator[docker.APIClient]:
    """A low-level client of the engine for a test module (it fails when there is no engine).
    When the module ends: the build stages of `stack_names`, then every container and image
    labelled `paas.test-run=<run>` (and the containers of those images), are removed."""
    client = docker.APIClient(version="auto")
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means there is no engine to test
        pytest.fail(f"no Docker engine: {exc}; {SETUP}")
    try:
        yield client
    finally:
        remove_build_stages(client, stack_names)
        label = {"label": f"paas.test-run={run}"}
        for container in client.containers(all=True, filters=label):
            client.remove_container(container["Id"], force=True)
        for image in client.images(filters=label):
            for container in client.containers(all=True, filters={"ancestor": image["Id"]}):
                client.remove_container(container["Id"], force=True)
            client.remove_image(image["Id"], force=True)
        client.close()
