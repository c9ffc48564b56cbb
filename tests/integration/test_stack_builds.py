"""The python stack against the real Docker engine (issue 9): its images are made from Debian's
packages once per test session (they are the platform's cache, kept like `paas/busybox:latest`,
so a second run is quick), then a tiny python app with one PyPI dependency is built on them,
served on $PORT, and its run image is checked: user `app` (uid 10001), no compiler, no pip.

Every app image gets the label `paas.test-run` and a unique tag; they and their containers are
removed when the module ends, passed or not.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import docker
import pytest

from paas.builder import stackimages, stacks
from paas.builder.builder import STACK_LOG_PREFIX, BuildFailed, build_image
from tests.build_stages import engine_for_run
from test_builder import get, targz  # the same folder (pytest puts it on sys.path)

pytestmark = pytest.mark.docker

RUN = secrets.token_hex(4)
LABELS = {"paas.test-run": RUN}
APP = {
    "requirements.txt": "six==1.16.0\n",
    "Procfile": "web: python3 app.py\n",
    "app.py": (
        "import os\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        "import six\n\n"
        "class Hello(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = f'hello from six {six.__version__} as {os.getuid()}\\n'.encode()\n"
        "        self.send_response(200)\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n\n"
        "HTTPServer(('', int(os.environ['PORT'])), Hello).serve_forever()\n"),
}


@pytest.fixture(scope="module")
def api() -> Iterator[docker.APIClient]:
    with engine_for_run(RUN, ["python"]) as client:
        yield client


@pytest.fixture(scope="module")
def python_stack(api: docker.APIClient) -> stacks.Stack:
    """The python stack's images, made once (about a minute and a half cold here)."""
    stack = stacks.get_stack("python")
    lines: list[str] = []
    stackimages.ensure_images(stack, docker_client=api, on_log=lines.append)
    assert all(s.current for s in stackimages.image_states(stack, docker_client=api))
    return stack


def run_in(api: docker.APIClient, image: str, command: list[str]) -> tuple[int, str]:
    container = api.create_container(image, command=command, labels=LABELS)["Id"]
    try:
        api.start(container)
        code = api.wait(container, timeout=60)["StatusCode"]
        return code, api.logs(container).decode()
    finally:
        api.remove_container(container, force=True)


@pytest.fixture(scope="module")
def built(api: docker.APIClient, python_stack: stacks.Stack) -> dict[str, object]:
    tag = f"paas/stacktest-{RUN}:v1"
    log: list[str] = []
    result = build_image(context=targz(APP), tag=tag, docker_client=api, on_log=log.append,
                         labels=LABELS)
    return {"tag": tag, "result": result, "log": log}


def test_the_stack_images_are_labelled_with_the_folder_digest(
        api: docker.APIClient, python_stack: stacks.Stack) -> None:
    for tag in (python_stack.build_image, python_stack.run_image):
        labels = api.inspect_image(tag)["Config"]["Labels"]
        assert labels[stackimages.LABEL_STACK] == "python"
        assert labels[stackimages.LABEL_VERSION] == python_stack.version
        assert labels[stackimages.LABEL_DIGEST] == stackimages.image_digest(python_stack)
    # current images are not made again
    assert stackimages.ensure_images(python_stack, docker_client=api) is False


def test_a_python_app_is_built_on_the_python_stack_and_serves_on_port(
        api: docker.APIClient, built: dict[str, object]) -> None:
    assert built["result"].stack == "python"  # type: ignore[attr-defined]
    assert not any(line.startswith(STACK_LOG_PREFIX) for line in built["log"])  # cached
    container = api.create_container(
        str(built["tag"]), environment={"PORT": "5000"}, ports=[5000], labels=LABELS,
        host_config=api.create_host_config(port_bindings={5000: ("127.0.0.1", None)}))["Id"]
    api.start(container)
    port = api.port(container, 5000)[0]["HostPort"]
    assert get(f"http://127.0.0.1:{port}/") == "hello from six 1.16.0 as 10001\n"


def test_the_run_image_runs_as_app_and_carries_no_build_tooling(
        api: docker.APIClient, built: dict[str, object]) -> None:
    tag = str(built["tag"])
    assert api.inspect_image(tag)["Config"]["User"] == "app"
    code, out = run_in(api, tag, ["/bin/sh", "-c", "id -u; id -un"])
    assert (code, out.split()) == (0, ["10001", "app"])
    probe = ("for t in gcc cc c++ make pip pip3 /venv/bin/pip; do command -v $t; done; "
             "dpkg -s python3-pip python3-venv gcc 2>/dev/null | grep '^Package'; "
             "python3 -c 'import pip' 2>/dev/null && echo pip-module; exit 0")
    code, out = run_in(api, tag, ["/bin/sh", "-c", probe])
    assert (code, out) == (0, "")
    code, out = run_in(api, tag, ["python3", "-c", "import six; print(six.__file__)"])
    assert (code, out.strip()) == (0, "/venv/lib/python3.11/site-packages/six.py")
    # /app belongs to root: the app cannot rewrite its own code
    code, out = run_in(api, tag, ["/bin/sh", "-c", "touch /app/x 2>/dev/null || echo ro"])
    assert out.strip() == "ro"


def test_a_source_change_reuses_the_dependency_layer(
        api: docker.APIClient, built: dict[str, object]) -> None:
    changed = dict(APP, **{"app.py": APP["app.py"] + "# one more line\n"})
    log: list[str] = []
    build_image(context=targz(changed), tag=f"paas/stacktest-{RUN}:v2", docker_client=api,
                on_log=log.append, labels=LABELS)
    text = "\n".join(log)
    install = text.index("RUN /venv/bin/pip install -r /app/requirements.txt")
    assert text[install:].split("Step", 1)[0].count("Using cache") == 1, text
    copy_source = text.index("COPY . /app")
    assert "Using cache" not in text[copy_source:].split("Step", 1)[0]


def test_a_requirement_that_does_not_exist_fails_with_pips_line(
        api: docker.APIClient, python_stack: stacks.Stack) -> None:
    files = dict(APP, **{"requirements.txt": "paas-no-such-package-" + RUN + "==1.0\n"})
    with pytest.raises(BuildFailed) as exc:
        build_image(context=targz(files), tag=f"paas/stacktest-{RUN}:bad", docker_client=api,
                    labels=LABELS)
    assert "pip install" in exc.value.message
    assert any("No matching distribution found" in line for line in exc.value.log_tail)
