"""`POST /v1/apps/{app}/releases?stream=1`: the build's log as application/x-ndjson, the
stack phase first when a stack's images are made, then one last object with the release or
the error; an error before the first line keeps its status. The Docker build is a fake that
logs as the builder does (`paas.builder.builder.build_image` calls `on_log` from a thread)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from paas.builder import builder
from paas.controller.engine import Engine
from tests.service.test_api import error_of, tar_gz

CONTEXT = tar_gz({"Procfile": b"web: httpd -f -p $PORT\n"})
STACK_LINES = ["stack: making paas-stack/go-build:1 from Debian bookworm packages: golang-go",
               "stack: made paas-stack/go-build:1 in 80.1s"]
BUILD_LINES = ["Step 1/3 : FROM paas/busybox:latest", " ---> 1234", "Successfully built 1234"]


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    monkeypatch.setattr(Engine, "client", property(lambda self: object()))

    def install(lines: list[str], *, fail: str | None = None) -> None:
        def build_image(*, context: bytes, tag: str, docker_client: Any,
                        on_log: Callable[[str], None], **_: Any) -> builder.BuildResult:
            for line in lines:
                on_log(line)
            if fail:
                raise builder.BuildFailed(fail, lines[-2:])
            return builder.BuildResult(image_id="sha256:" + "ab" * 32, tag=tag,
                                       log_lines=tuple(lines), stack="busybox")
        monkeypatch.setattr(builder, "build_image", build_image)
    return install


async def post(api, admin, query: str = "?stream=1", data: bytes = CONTEXT):
    await api.post("/v1/apps", json={"name": "web"}, headers=admin)
    return await api.post(f"/v1/apps/web/releases{query}", data=data,
                          headers={**admin, "Content-Type": "application/gzip"})


async def objects(resp) -> list[dict[str, Any]]:
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in (await resp.text()).splitlines()]


async def test_a_first_build_streams_the_stack_phase_then_the_package_phase(api, admin,
                                                                            fake_build):
    fake_build(STACK_LINES + BUILD_LINES)
    got = await objects(await post(api, admin))
    assert got[:-1] == [
        {"phase": "stack", "line": "making paas-stack/go-build:1 from Debian bookworm packages: "
                                   "golang-go"},
        {"phase": "stack", "line": "made paas-stack/go-build:1 in 80.1s"},
        *({"phase": "package", "line": line} for line in BUILD_LINES)]
    release = got[-1]["release"]
    assert release["version"] == 1 and release["stack"] == "busybox"
    listed = await (await api.get("/v1/apps/web/releases", headers=admin)).json()
    assert [r["version"] for r in listed["releases"]] == [1]


async def test_a_cached_stack_streams_only_the_package_phase(api, admin, fake_build):
    fake_build(BUILD_LINES)
    got = await objects(await post(api, admin))
    assert {o.get("phase") for o in got[:-1]} == {"package"}
    assert set(got[-1]) == {"release"}


async def test_a_failed_build_ends_the_stream_with_the_error_its_status_and_the_tail(
        api, admin, fake_build):
    fake_build(BUILD_LINES + ["ERROR: No matching distribution found for nosuchpkg"],
               fail="the Dockerfile failed to build at step 2/3: pip failed.")
    got = await objects(await post(api, admin))
    assert got[-1] == {"error": "the Dockerfile failed to build at step 2/3: pip failed.",
                       "status": 422,
                       "log_tail": "Successfully built 1234\n"
                                   "ERROR: No matching distribution found for nosuchpkg"}
    listed = await (await api.get("/v1/apps/web/releases", headers=admin)).json()
    assert listed["releases"] == []


async def test_an_error_before_the_first_line_is_the_usual_json_error(api, admin, fake_build):
    fake_build(BUILD_LINES)
    await error_of(await post(api, admin, data=b"not a tar"), 400)
    await error_of(await api.post("/v1/apps/nope/releases?stream=1", data=CONTEXT,
                                  headers={**admin, "Content-Type": "application/gzip"}), 404)
    await error_of(await post(api, admin, query="?stream=yes"), 400)


async def test_without_stream_the_answer_is_one_json_document(api, admin, fake_build):
    fake_build(STACK_LINES + BUILD_LINES)
    resp = await post(api, admin, query="")
    assert resp.status == 201
    assert (await resp.json())["release"]["version"] == 1


def test_the_stream_is_documented_as_ndjson():
    from paas.controller.openapi import openapi_document

    post_op = openapi_document()["paths"]["/v1/apps/{app}/releases"]["post"]
    assert "application/x-ndjson" in post_op["responses"]["200"]["content"]
    assert "stream" in [p["name"] for p in post_op["parameters"]]
