"""`[build] timeout` in paas.toml, and what `build_image` stops and removes, against a fake
Docker API (the real engine: tests/integration/test_builder.py)."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from paas.builder.appconfig import BadAppConfig, build_timeout, parse_app_config
from paas.builder.builder import BuildFailed, build_image

BASE = "sha256:" + "b" * 64  # paas/busybox:latest, there before every build
CACHED = "sha256:" + "c" * 64  # a stage of an earlier successful build (warm cache)


@pytest.mark.parametrize("toml,expected", [
    (None, 600.0),
    ("", 600.0),
    ('[build]\nstack = "go"\n', 600.0),
    ("[build]\ntimeout = 10\n", 10.0),
    ("[build]\ntimeout = 90.5\n", 90.5),
    ("[build]\ntimeout = 14400\n", 14400.0),
])
def test_build_timeout_good_values(toml: str | None, expected: float) -> None:
    assert build_timeout(toml) == expected
    assert parse_app_config(procfile="web: x", toml_text=toml).build_timeout == expected


@pytest.mark.parametrize("toml", [
    "[build]\ntimeout = 9\n",
    "[build]\ntimeout = 0\n",
    "[build]\ntimeout = -5\n",
    "[build]\ntimeout = 14401\n",
    '[build]\ntimeout = "10m"\n',
    "[build]\ntimeout = true\n",
    "build = 3\n",
])
def test_build_timeout_bad_values_get_one_sentence(toml: str) -> None:
    with pytest.raises(BadAppConfig, match=r"^paas.toml \[?build") as caught:
        parse_app_config(procfile="web: x", toml_text=toml)
    assert "\n" not in str(caught.value)


def targz(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


CONTEXT = targz({"Dockerfile": "FROM paas/busybox:latest\nRUN make\n"})


class FakeAPI:
    """The calls build_image makes; `stream` is what the build reports, `images` what exists
    (full id -> tags); a step's container blocks the stream until it is removed, when
    `blocking` is set."""

    def __init__(self, stream: list[dict[str, Any]], *, blocking: bool = False) -> None:
        self.stream = stream
        self.blocking = blocking
        self.image_tags: dict[str, list[str]] = {BASE: ["paas/busybox:latest"], CACHED: []}
        self.removed_images: list[str] = []
        self.removed_containers: list[str] = []
        self.container_gone = threading.Event()
        self.closed = False

    def images(self, *, all: bool = False, quiet: bool = False) -> list[str]:  # noqa: A002
        assert all and quiet
        return list(self.image_tags)

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        assert kwargs["rm"] and kwargs["forcerm"]
        def chunks() -> Iterator[dict[str, Any]]:
            try:
                for chunk in self.stream:
                    text = chunk.get("stream", "")
                    made = re.fullmatch(r" ---> ([0-9a-f]{12})\n", text)
                    if made and not any(i[7:].startswith(made[1]) for i in self.image_tags):
                        self.image_tags["sha256:" + made[1] + "0" * 52] = []  # a new step image
                    yield chunk
                    if self.blocking and "Running in" in text:
                        assert self.container_gone.wait(10), "the container was never removed"
                        yield {"error": "The command '/bin/sh -c make' returned a non-zero "
                                        "code: 137"}
                        return
            finally:
                self.closed = True
        return chunks()

    def _full(self, image: str) -> str:
        found = [i for i in self.image_tags if i.removeprefix("sha256:").startswith(image)]
        if not found:
            raise docker.errors.ImageNotFound(image)
        return found[0]

    def inspect_image(self, image: str) -> dict[str, Any]:
        if ":" in image and not image.startswith("sha256:"):
            for full, tags in self.image_tags.items():
                if image in tags:
                    return {"Id": full, "RepoTags": tags}
            raise docker.errors.ImageNotFound(image)
        full = self._full(image)
        return {"Id": full, "RepoTags": self.image_tags[full]}

    def remove_image(self, image: str) -> None:
        full = self._full(image)
        del self.image_tags[full]
        self.removed_images.append(full[7:19])

    def remove_container(self, container: str, *, force: bool = False) -> None:
        assert force
        self.removed_containers.append(container)
        self.container_gone.set()


def lines(*texts: str) -> list[dict[str, Any]]:
    return [{"stream": text + "\n"} for text in texts]


def test_a_failed_build_removes_its_containers_and_new_images_only() -> None:
    api = FakeAPI(lines("Step 1/4 : FROM paas/busybox:latest", " ---> " + "b" * 12,
                        "Step 2/4 : RUN pip install", " ---> Using cache", " ---> " + "c" * 12,
                        "Step 3/4 : RUN make", " ---> Running in 111111111111",
                        " ---> Removed intermediate container 111111111111",
                        " ---> 222222222222",
                        "Step 4/4 : RUN make test", " ---> Running in 333333333333")
                  + [{"error": "The command '/bin/sh -c make test' returned a non-zero code: 2"}])
    with pytest.raises(BuildFailed, match="at step 4/4 .*non-zero code: 2"):
        build_image(context=CONTEXT, tag="paas/app:v1", docker_client=api)
    assert api.removed_containers == ["111111111111", "333333333333"]
    assert api.removed_images == ["222222222222"]  # not the base, not the cached stage
    assert set(api.image_tags) == {BASE, CACHED}
    assert api.closed


def test_a_successful_build_keeps_its_stages() -> None:
    api = FakeAPI(lines("Step 1/3 : FROM paas/busybox:latest AS build", " ---> " + "b" * 12,
                        "Step 2/3 : RUN make", " ---> Running in 111111111111",
                        " ---> 222222222222", "Step 3/3 : FROM paas/busybox:latest",
                        " ---> " + "b" * 12, "Successfully built " + "b" * 12,
                        "Successfully tagged paas/app:v1"))
    api.image_tags[BASE].append("paas/app:v1")
    result = build_image(context=CONTEXT, tag="paas/app:v1", docker_client=api)
    assert result.image_id == BASE
    assert api.removed_images == [] and api.removed_containers == []
    assert "sha256:222222222222" + "0" * 52 in api.image_tags


def test_a_build_past_its_timeout_is_stopped_and_says_so() -> None:
    api = FakeAPI(lines("Step 1/2 : FROM paas/busybox:latest", " ---> " + "b" * 12,
                        "Step 2/2 : RUN make", " ---> Running in 444444444444"),
                  blocking=True)
    started = time.monotonic()
    with pytest.raises(BuildFailed) as caught:
        build_image(context=CONTEXT, tag="paas/app:v1", docker_client=api, build_timeout_s=0.3)
    assert time.monotonic() - started < 5
    assert caught.value.message.startswith(
        "the build ran longer than its [build] timeout of 0.3 s and was stopped; ")
    assert "444444444444" in api.removed_containers
    assert api.closed


def test_a_build_past_its_timeout_between_steps_is_stopped_at_the_next_line() -> None:
    class Slow(FakeAPI):
        def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
            inner = super().build(**kwargs)
            def chunks() -> Iterator[dict[str, Any]]:
                for chunk in inner:
                    time.sleep(0.1)
                    yield chunk
            return chunks()
    api = Slow(lines("Step 1/3 : FROM paas/busybox:latest", " ---> " + "b" * 12,
                     "Step 2/3 : RUN make", " ---> Running in 777777777777",
                     " ---> 555555555555", *["Step 3/3 : COPY . /app"] * 20))
    with pytest.raises(BuildFailed, match=r"\[build\] timeout of 0.75 s"):
        build_image(context=CONTEXT, tag="paas/app:v1", docker_client=api,
                    build_timeout_s=0.75)
    assert api.removed_images == ["555555555555"]
    assert api.closed
