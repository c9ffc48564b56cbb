"""The node, jvm and ruby stacks against the real Docker engine (issue 9): each stack's images
are made from Debian's packages once per test session (they are the platform's cache, kept like
`paas/busybox:latest`, so a second run is quick), then its example (`examples/node-web`,
`examples/jvm-service`, `examples/ruby-hello`) is built from its folder through the platform's
builder, served on $PORT on 127.0.0.1, checked on /health and as uid 10001, and its own
`[test] command` is run from the image against it, as the platform runs it. A one-line source
change then rebuilds with the dependency layer from the cache.

The cold time of each stack's images (when this session made them) and the warm rebuild times
are printed (`-s`) and written to `$TMPDIR/paas-stacks-more-timings.json`.

Every app image gets the label `paas.test-run` and a unique tag; they, their containers and the
build stages the builder kept are removed when the module ends, passed or not.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from paas.builder import stackimages, stacks
from paas.builder.builder import STACK_LOG_PREFIX, build_image
from paas.builder.context import make_build_context
from paas.builder.testrunner import run_integration_test
from tests.build_stages import engine_for_run
from test_builder import get  # the same folder (pytest puts it on sys.path)

pytestmark = pytest.mark.docker

RUN = secrets.token_hex(4)
LABELS = {"paas.test-run": RUN}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# stack -> (example folder, the source file a one-line change goes to, its comment marker)
CASES = {
    "node": ("node-web", "server.js", "//"),
    "jvm": ("jvm-service", "src/main/java/example/Server.java", "//"),
    "ruby": ("ruby-hello", "config.ru", "#"),
}
# What a developer's machine leaves next to the source and the build must not get.
LOCAL_ONLY = frozenset({".git", "node_modules", "target", ".bundle"})
# The step of each generated Dockerfile that installs the dependencies.
DEPENDENCY_STEP = {
    "node": "RUN npm ci --omit=dev",
    "jvm": "RUN cp -Rs /usr/share/maven-repo /m2",
    "ruby": "RUN mkdir -p /bundle && bundle install --local",
}
TIMINGS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def api() -> Iterator[docker.APIClient]:
    with engine_for_run(RUN, CASES) as client:
        yield client
    if TIMINGS:
        text = json.dumps(TIMINGS, indent=2, sort_keys=True)
        print(f"\nstack timings (seconds):\n{text}")
        (Path(tempfile.gettempdir()) / "paas-stacks-more-timings.json").write_text(text + "\n")


@pytest.fixture(scope="module")
def stack_images(api: docker.APIClient) -> dict[str, stacks.Stack]:
    """The three stacks' images, made once when they are not current (cold: see TIMINGS)."""
    out = {}
    for name in CASES:
        stack = stacks.get_stack(name)
        started = time.monotonic()
        if stackimages.ensure_images(stack, docker_client=api):
            TIMINGS.setdefault(name, {})["stack_images_cold"] = round(
                time.monotonic() - started, 1)
        assert all(s.current for s in stackimages.image_states(stack, docker_client=api))
        out[name] = stack
    return out


def copy_example(name: str, into: Path) -> Path:
    folder = into / name
    shutil.copytree(EXAMPLES / name, folder, ignore=shutil.ignore_patterns(*LOCAL_ONLY))
    return folder


def build(api: docker.APIClient, folder: Path, tag: str) -> tuple[float, list[str], str]:
    log: list[str] = []
    started = time.monotonic()
    result = build_image(context=make_build_context(directory=folder, exclude=LOCAL_ONLY),
                         tag=tag, docker_client=api, on_log=log.append, labels=LABELS)
    return time.monotonic() - started, log, result.stack


def step_output(log: list[str], instruction: str) -> str:
    """The log lines of the build step whose instruction starts with `instruction`."""
    text = "\n".join(log)
    start = text.index(f" : {instruction}")
    return text[start:].split("\nStep ", 1)[0]


@pytest.mark.parametrize("name", list(CASES))
def test_the_example_builds_serves_passes_its_test_and_rebuilds_warm(
        api: docker.APIClient, stack_images: dict[str, stacks.Stack], tmp_path: Path,
        name: str) -> None:
    example, source, comment = CASES[name]
    folder = copy_example(example, tmp_path)
    tag = f"paas/stacksmore-{name}-{RUN}:v1"

    seconds, log, detected = build(api, folder, tag)
    TIMINGS.setdefault(name, {})["example_build"] = round(seconds, 1)
    assert detected == name
    assert not any(line.startswith(STACK_LOG_PREFIX) for line in log)  # made by the fixture
    assert api.inspect_image(tag)["Config"]["User"] == "app"

    container = api.create_container(
        tag, environment={"PORT": "5000", "PAAS_RELEASE": "1"}, ports=[5000], labels=LABELS,
        host_config=api.create_host_config(port_bindings={5000: ("127.0.0.1", None)}))["Id"]
    api.start(container)
    port = api.port(container, 5000)[0]["HostPort"]
    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/health", deadline_s=60).strip() == "ok"
    assert get(f"{base}/").startswith("hello from v1 instance ")

    # The web process (and any child of it) runs as the run image's user `app`.
    top = api.top(container, ps_args="-o pid,uid,args")
    uid = top["Titles"].index("UID")
    assert top["Processes"] and all(row[uid] == str(stackimages.APP_UID)
                                    for row in top["Processes"]), top

    # The example's own integration test, from the image, as the platform runs it.
    command = tomllib.loads((folder / "paas.toml").read_text())["test"]["command"]
    outcome = run_integration_test(
        docker_client=docker.DockerClient(version="auto"), image=tag, command=command,
        target_url=base, env={"PAAS_RELEASE": "1"}, labels=LABELS, timeout_s=120)
    assert outcome.passed, outcome.output

    # The run image holds what runs, not the build tools.
    probe = ("for t in npm mvn javac gcc cc make; do command -v $t; done; "
             "test -d /m2 && echo /m2; test -d /usr/share/maven-repo && echo maven-repo; exit 0")
    check = api.create_container(tag, command=["/bin/sh", "-c", probe], labels=LABELS)["Id"]
    api.start(check)
    assert api.wait(check, timeout=60)["StatusCode"] == 0
    assert api.logs(check).decode() == ""

    # A one-line change reuses the dependency layer and rebuilds only what follows it.
    path = folder / source
    path.write_text(path.read_text() + f"{comment} one more line\n")
    seconds, log, _ = build(api, folder, f"paas/stacksmore-{name}-{RUN}:v2")
    TIMINGS[name]["example_warm_rebuild"] = round(seconds, 1)
    assert "Using cache" in step_output(log, DEPENDENCY_STEP[name])
    assert "Using cache" not in step_output(log, "COPY . ")
