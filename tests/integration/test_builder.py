"""Integration tests of the image builder against the real Docker engine.

Every image gets a unique tag `paas/buildtest-<run id>:v1` and the label `paas.test-run`, and is
removed when its test ends, whether it passed or not.
"""

from __future__ import annotations

import gzip
import io
import secrets
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from paas.builder.context import BadBuildContext, make_build_context
from paas.builder.builder import (
    BadImageTag,
    BuildFailed,
    BuilderUnavailable,
    BuildResult,
    build_image,
    render_dockerfile,
)
from tests.waiting import wait_until
from tests.engines import SETUP

pytestmark = pytest.mark.docker
HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


@pytest.fixture(scope="module")
def api() -> Iterator[docker.APIClient]:
    client = docker.APIClient(version="auto")
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means there is no engine to test
        pytest.fail(f"no Docker engine: {exc}; {SETUP}")
    try:
        client.inspect_image("paas/busybox:latest")
    except docker.errors.ImageNotFound:
        pytest.fail(f"paas/busybox:latest is missing; {SETUP}")
    yield client
    client.close()


@pytest.fixture
def tag(api: docker.APIClient) -> Iterator[str]:
    """A unique tag; the image (if any) and its containers are removed afterwards."""
    run = secrets.token_hex(4)
    name = f"paas/buildtest-{run}:v1"
    yield name
    for container in api.containers(all=True, filters={"ancestor": name}):
        api.remove_container(container["Id"], force=True)
    try:
        api.remove_image(name, force=True)
    except docker.errors.ImageNotFound:
        pass


def targz(files: dict[str, str], *, modes: dict[str, int] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def serve(api: docker.APIClient, image: str, env: dict[str, str]) -> tuple[str, str]:
    """Run `image` with its port published on 127.0.0.1; return (container id, base URL)."""
    container = api.create_container(
        image, environment=env, ports=[5000],
        host_config=api.create_host_config(port_bindings={5000: ("127.0.0.1", None)}),
    )["Id"]
    api.start(container)
    port = api.port(container, 5000)[0]["HostPort"]
    return container, f"http://127.0.0.1:{port}"


def get(url: str, *, deadline_s: float = 30.0) -> str:
    """The body at `url`, once the container answers there."""
    def body() -> str:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return response.read().decode()
    return wait_until(body, deadline_s, what=url, ignore=(OSError,))


def dangling(api: docker.APIClient) -> set[str]:
    return set(api.images(filters={"dangling": True}, quiet=True))


def nothing_left_behind(api: docker.APIClient, lines: list[str], *,
                        before: set[str]) -> bool:
    """No new dangling image, no container the build log names, and no untagged image it
    names that was not there `before` (every image id, `api.images(all=True, quiet=True)`)."""
    assert dangling(api) <= before, "the build left dangling images"
    for line in lines:
        words = line.split()
        if line.strip().startswith("---> Running in "):
            assert not api.containers(all=True, filters={"id": words[-1]}), line
        elif len(words) == 2 and words[0] == "--->":
            if any(i.removeprefix("sha256:").startswith(words[1]) for i in before):
                continue  # a cached step or the base image
            try:
                tags = api.inspect_image(words[1]).get("RepoTags") or []
            except docker.errors.ImageNotFound:
                continue
            assert any(t != "<none>:<none>" for t in tags), f"untagged {words[1]} is left"
    return True


def test_builds_the_hello_example_and_it_serves(api: docker.APIClient, tag: str) -> None:
    lines: list[str] = []
    result = build_image(context=make_build_context(directory=HELLO), tag=tag,
                         docker_client=api, on_log=lines.append,
                         labels={"paas.test-run": tag})

    assert isinstance(result, BuildResult) and result.tag == tag
    assert result.image_id == api.inspect_image(tag)["Id"]
    assert result.image_id.startswith("sha256:")
    assert lines == list(result.log_lines)
    assert any(line.startswith("Step 1/") for line in lines)
    assert api.inspect_image(tag)["Config"]["Labels"]["paas.test-run"] == tag

    container, base = serve(api, tag, {"PORT": "5000", "PAAS_RELEASE": "3",
                                       "PAAS_INSTANCE_ID": "hello-v3-web-1a2b3c",
                                       "GREETING": "hi"})
    try:
        assert get(base + "/") == "hello from v3 instance hello-v3-web-1a2b3c\nhi\n"
        assert get(base + "/health") == "ok\n"
        logs = api.logs(container).decode()
        assert "hello v3 instance hello-v3-web-1a2b3c listening on port 5000" in logs
        # The bundled integration test passes against it, from the same image.
        test = api.create_container(
            tag, command=["./test.sh"], environment={"PAAS_TARGET_URL": base,
                                                     "PAAS_RELEASE": "3"},
            host_config=api.create_host_config(network_mode="host"))["Id"]
        api.start(test)
        assert api.wait(test, timeout=30)["StatusCode"] == 0, api.logs(test).decode()
        # ...and fails against something that is not the app.
        api.remove_container(test, force=True)
        test = api.create_container(
            tag, command=["./test.sh"], environment={"PAAS_TARGET_URL": "http://127.0.0.1:1"},
            host_config=api.create_host_config(network_mode="host"))["Id"]
        api.start(test)
        assert api.wait(test, timeout=30)["StatusCode"] != 0
        api.remove_container(test, force=True)
        # It stops on SIGTERM (start.sh exits 0) rather than by the kill after the timeout (137).
        # How fast: bench/reactions.
        api.stop(container, timeout=10)
        assert api.inspect_container(container)["State"]["ExitCode"] == 0
    finally:
        api.remove_container(container, force=True)


def test_failing_run_raises_build_failed_with_the_tail(api: docker.APIClient, tag: str) -> None:
    dockerfile = ("FROM paas/busybox:latest\n"
                  "RUN echo preparing\n"
                  "RUN echo about to fail && for i in $(seq 1 25); do echo noise $i; done "
                  "&& exit 3\n"
                  "CMD [\"true\"]\n")
    lines: list[str] = []
    before = set(api.images(all=True, quiet=True))
    with pytest.raises(BuildFailed) as caught:
        build_image(context=targz({"Dockerfile": dockerfile}), tag=tag, docker_client=api,
                    on_log=lines.append)
    failure = caught.value
    assert failure.message.startswith("the Dockerfile failed to build at step 3/4 (RUN echo about")
    assert "returned a non-zero code: 3" in failure.message
    assert "\n" not in failure.message and failure.message.endswith(".")
    assert 1 <= len(failure.log_tail) <= 20
    assert failure.log_tail == tuple(lines[-len(failure.log_tail):])
    assert "noise 25" in failure.log_tail
    with pytest.raises(docker.errors.ImageNotFound):
        api.inspect_image(tag)
    # The step that succeeded made an untagged layer; the failed build removed it.
    assert nothing_left_behind(api, lines, before=before)


def test_bad_dockerfile_instruction_raises_build_failed(api: docker.APIClient, tag: str) -> None:
    with pytest.raises(BuildFailed) as caught:
        build_image(context=targz({"Dockerfile": "FROM paas/busybox:latest\nFLY away\n"}),
                    tag=tag, docker_client=api)
    assert "unknown instruction" in caught.value.message.lower()
    assert "unknown instruction" in caught.value.log_tail[-1].lower()


def test_missing_base_image_says_to_use_a_local_one(api: docker.APIClient, tag: str) -> None:
    missing = f"paas/no-such-stack-{secrets.token_hex(4)}:latest"
    with pytest.raises(BuildFailed) as caught:
        build_image(context=targz({"Dockerfile": f"FROM {missing}\n"}), tag=tag,
                    docker_client=api)
    assert caught.value.message == (
        f"the Dockerfile failed to build at step 1/1 (FROM {missing}): the base image is not on "
        "this Docker engine; build FROM paas/busybox:latest or another local image.")


def test_procfile_only_context_builds_with_a_generated_dockerfile(
        api: docker.APIClient, tag: str) -> None:
    start = "#!/bin/sh\necho started on $PORT\nexec httpd -f -p \"$PORT\" -h /app/www\n"
    context = targz({"Procfile": "web: PORT=${PORT:-5000} ./start.sh\n", "start.sh": start,
                     "www/index.html": "from a procfile\n"}, modes={"start.sh": 0o755})
    result = build_image(context=context, tag=tag, docker_client=api)

    config = api.inspect_image(result.image_id)["Config"]
    assert config["Cmd"] == ["/bin/sh", "-c", "PORT=${PORT:-5000} ./start.sh"]
    assert config["WorkingDir"] == "/app"
    container, base = serve(api, tag, {"PORT": "5000"})
    try:
        assert get(base + "/") == "from a procfile\n"
    finally:
        api.remove_container(container, force=True)


def test_hello_builds_from_its_procfile_alone(api: docker.APIClient, tag: str) -> None:
    context = make_build_context(directory=HELLO, exclude=frozenset({".git", "Dockerfile"}))
    result = build_image(context=context, tag=tag, docker_client=api)
    assert api.inspect_image(result.image_id)["Config"]["Cmd"] == ["/bin/sh", "-c", "./start.sh"]


def test_generated_dockerfile_runs_the_web_command_through_sh() -> None:
    text = render_dockerfile(procfile="# processes\nworker: ./work.sh\nweb: ./start.sh \"$X\"\n")
    assert text.splitlines()[1:] == ["FROM paas/busybox:latest", "COPY . /app", "WORKDIR /app",
                                     'CMD ["/bin/sh", "-c", "./start.sh \\"$X\\""]']


@pytest.mark.parametrize("files,message", [
    ({"README": "no dockerfile\n"}, "no Dockerfile, .* and no Procfile"),
    ({"Procfile": "worker: ./work.sh\n"}, "no web process"),
])
def test_contexts_without_a_way_to_build(api: docker.APIClient, tag: str,
                                         files: dict[str, str], message: str) -> None:
    with pytest.raises(BadBuildContext, match=message):
        build_image(context=targz(files), tag=tag, docker_client=api)


def test_evil_context_is_refused_before_docker_sees_it(api: docker.APIClient, tag: str) -> None:
    with pytest.raises(BadBuildContext, match="'..'"):
        build_image(context=targz({"Dockerfile": "FROM paas/busybox:latest\n", "../x": ""}),
                    tag=tag, docker_client=api)


@pytest.mark.parametrize("bad", ["Paas/Hello:v1", "paas/hello", "paas/hello:", "-x:v1",
                                 "paas/hello:v1;rm"])
def test_bad_tags_are_refused(api: docker.APIClient, bad: str) -> None:
    with pytest.raises(BadImageTag):
        build_image(context=targz({"Dockerfile": "FROM paas/busybox:latest\n"}), tag=bad,
                    docker_client=api)


def test_unreachable_engine_raises_builder_unavailable(tmp_path: Path) -> None:
    client = docker.APIClient(base_url=f"unix://{tmp_path}/no.sock", version="1.41")
    with pytest.raises(BuilderUnavailable, match="retry"):
        build_image(context=targz({"Dockerfile": "FROM paas/busybox:latest\n"}),
                    tag="paas/buildtest-unreachable:v1", docker_client=client)


def test_a_build_past_its_timeout_is_stopped_and_leaves_nothing(
        api: docker.APIClient, tag: str) -> None:
    run = secrets.token_hex(4)  # a new first step, so it is not taken from the cache
    dockerfile = (f"FROM paas/busybox:latest\nRUN echo {run} > /made\n"
                  "RUN echo sleeping && sleep 60\nCMD [\"true\"]\n")
    lines: list[str] = []
    before = set(api.images(all=True, quiet=True))
    started = time.monotonic()
    with pytest.raises(BuildFailed) as caught:
        build_image(context=targz({"Dockerfile": dockerfile}), tag=tag, docker_client=api,
                    on_log=lines.append, build_timeout_s=2)
    took = time.monotonic() - started
    assert took < 8, f"stopped after {took:.1f} s"
    assert caught.value.message.startswith(
        "the build ran longer than its [build] timeout of 2 s and was stopped; ")
    assert "sleeping" in lines
    assert any(line.strip().startswith("---> Running in ") for line in lines)
    assert nothing_left_behind(api, lines, before=before)
    with pytest.raises(docker.errors.ImageNotFound):
        api.inspect_image(tag)


def test_a_multi_stage_build_whose_second_stage_fails_leaves_no_dangling_image(
        api: docker.APIClient, tag: str) -> None:
    run = secrets.token_hex(4)
    dockerfile = (f"FROM paas/busybox:latest AS first\nRUN echo {run} > /stage1\n"
                  "FROM paas/busybox:latest\nCOPY --from=first /stage1 /stage1\n"
                  f"RUN echo {run} second && exit 4\n")
    lines: list[str] = []
    before = set(api.images(all=True, quiet=True))
    with pytest.raises(BuildFailed, match="at step 5/5 .*non-zero code: 4"):
        build_image(context=targz({"Dockerfile": dockerfile}), tag=tag, docker_client=api,
                    on_log=lines.append)
    made = [line for line in lines if line.strip().startswith("---> ")]
    assert len(made) >= 4, lines  # the first stage and the COPY made images
    assert nothing_left_behind(api, lines, before=before)
