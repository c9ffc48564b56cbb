"""Removing the build stages a test's image builds left behind.

The classic builder keeps each build stage of a multi-stage Dockerfile as an untagged image: the
layer cache of a warm rebuild. A test module that builds on a stack removes, when it ends, the
untagged descendants of that stack's build image, so a run leaves no dangling images. (The
stack images themselves stay: they are the machine's cache, like `paas/busybox:latest`.)
"""

from __future__ import annotations

from collections.abc import Iterable

import docker
import docker.errors

from paas.build import stacks


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
